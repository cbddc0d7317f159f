"""The one settings tree, parsed from ``config.json`` once at start, strictly.

Every key is checked for its type and range before anything is created: a wrong value, a key
lightd does not know (a typo would otherwise be ignored in silence) or a section that is not an
object raises :class:`ConfigError`, one line naming the file, the key and the value. A missing key
and a key set to ``null`` take the default, so a config written by an older lightd keeps working.

``serve`` and ``token`` create the file (mode 0600, a fresh token) when it does not exist;
everything else only reads it (:func:`load`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from lightd.config_parse import ConfigError, Section, shown
from lightd.config_tree import (
    DEFAULT_INITIAL_PORTS,
    ApiSettings,
    AuthorizationSettings,
    EventsSettings,
    FirewallSettings,
    InitialPorts,
    MetricsSettings,
    PoolSettings,
    RepairSettings,
    RuntimeSettings,
    Settings,
    StorageSettings,
    TlsSettings,
)
from lightd.errors import InvalidInput

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "ApiSettings",
    "AuthorizationSettings",
    "ConfigError",
    "EventsSettings",
    "FirewallSettings",
    "InitialPorts",
    "MetricsSettings",
    "PoolSettings",
    "RepairSettings",
    "RuntimeSettings",
    "Settings",
    "StorageSettings",
    "TlsSettings",
    "config_path",
    "default_raw",
    "load",
    "load_or_create",
    "new_token",
    "parse",
    "read_config",
    "set_token",
    "validate_token",
    "write_config",
]

log = logging.getLogger(__name__)

DEFAULT_CONFIG_NAME = "config.json"
TOKEN_PREFIX = "lightd_"
MIN_TOKEN_LENGTH = 20
MAX_TOKEN_LENGTH = 4096
MAX_TIMEOUT = 86_400
MAX_CONNECTIONS = 1_000_000
MAX_IDLE_PASSES = 1_000_000
MAX_BACKLOG = 10_000_000
MAX_HEARTBEAT = 3600


# -- parsing -----------------------------------------------------------------------------------

SECTIONS = (
    "api", "authorization", "storage", "pool", "firewall", "runtime", "repair", "metrics", "events"
)


def parse(raw: Any, path: Path, shown_path: str | None = None) -> Settings:
    """The settings ``raw`` (a config file's JSON) describes, or :class:`ConfigError`."""
    where = shown_path if shown_path is not None else str(path)
    path = path.absolute()
    top = Section.top(raw, where, SECTIONS)
    api = top.section("api")
    settings = Settings(
        path=path,
        source=where,
        api=ApiSettings(
            host=api.host("host", ApiSettings.host),
            port=api.port("port", ApiSettings.port),
            access_log=api.boolean("access_log", ApiSettings.access_log),
            header_timeout=api.seconds("header_timeout", ApiSettings.header_timeout, MAX_TIMEOUT),
            body_timeout=api.seconds("body_timeout", ApiSettings.body_timeout, MAX_TIMEOUT),
            max_connections=api.integer("max_connections", ApiSettings.max_connections, 1, MAX_CONNECTIONS),
            tls=_tls(api, path.parent),
        ),
        authorization=_authorization(top.section("authorization")),
        storage=_storage(top.section("storage"), path.parent),
        pool=_pool(top.section("pool")),
        firewall=_firewall(top.section("firewall")),
        runtime=_runtime(top.section("runtime")),
        repair=_repair(top.section("repair")),
        metrics=_metrics(top.section("metrics")),
        events=_events(top.section("events")),
    )
    top.done()
    return settings


def _tls(api: Section, folder: Path) -> TlsSettings | None:
    tls = api.optional_section("tls")
    if tls is None:
        return None
    cert, key = tls.file("cert", folder), tls.file("key", folder)
    tls.done()
    return TlsSettings(cert, key)


def _authorization(section: Section) -> AuthorizationSettings:
    token = section.string("token", "", allow_empty=True)
    if token:
        try:
            validate_token(token, exact=True)
        except InvalidInput as exc:
            raise section.error("token", exc.message) from None
    section.done()
    return AuthorizationSettings(token)


def _storage(section: Section, folder: Path) -> StorageSettings:
    base = section.path("base_path", StorageSettings.base_path, folder)
    writer = section.choice("writer", StorageSettings.writer, ("process", "thread"))
    timeout = section.seconds("write_timeout", StorageSettings.write_timeout, MAX_TIMEOUT)
    section.done()
    return StorageSettings(base, writer, timeout)  # type: ignore[arg-type]  # checked by choice


def _pool(section: Section) -> PoolSettings:
    pool = PoolSettings(
        initial_ports=section.initial_ports("initial_ports", DEFAULT_INITIAL_PORTS, InitialPorts),
        host_check=section.boolean("host_check", PoolSettings.host_check),
        require_local_ip=section.boolean("require_local_ip", PoolSettings.require_local_ip),
        reserve_ports=section.boolean("reserve_ports", PoolSettings.reserve_ports),
    )
    section.done()
    return pool


def _firewall(section: Section) -> FirewallSettings:
    enabled = section.tristate("enabled", FirewallSettings.enabled)
    chain = section.chain("chain", FirewallSettings.chain)
    insert_jump = section.boolean("insert_jump", FirewallSettings.insert_jump)
    netns = section.string("netns", "") or None  # "" is refused: only a missing key is none
    section.done()
    return FirewallSettings(enabled, chain, insert_jump, netns)  # type: ignore[arg-type]


def _runtime(section: Section) -> RuntimeSettings:
    kind = section.choice("kind", RuntimeSettings.kind, ("auto", "docker", "none"))
    sock = section.socket("socket", RuntimeSettings.socket)
    stop_timeout = section.integer("stop_timeout", RuntimeSettings.stop_timeout, 0, MAX_TIMEOUT)
    section.done()
    return RuntimeSettings(kind, sock, stop_timeout)  # type: ignore[arg-type]  # checked by choice


def _repair(section: Section) -> RepairSettings:
    interval = section.seconds("interval", RepairSettings.interval, MAX_TIMEOUT, zero_ok=True)
    idle = section.integer("idle_passes", RepairSettings.idle_passes, 1, MAX_IDLE_PASSES)
    section.done()
    return RepairSettings(interval, idle)


def _metrics(section: Section) -> MetricsSettings:
    enabled = section.boolean("enabled", MetricsSettings.enabled)
    section.done()
    return MetricsSettings(enabled)


def _events(section: Section) -> EventsSettings:
    events = EventsSettings(
        backlog=section.integer("backlog", EventsSettings.backlog, 100, MAX_BACKLOG),
        heartbeat=section.seconds("heartbeat", EventsSettings.heartbeat, MAX_HEARTBEAT),
        client_timeout=section.seconds("client_timeout", EventsSettings.client_timeout, MAX_HEARTBEAT),
    )
    section.done()
    return events


def default_raw(token: str) -> dict[str, Any]:
    """The file a first start writes: every key with its default, so an operator sees them all."""
    return {
        "api": {
            "host": "127.0.0.1",
            "port": 8070,
            "access_log": False,
            "header_timeout": 10,
            "body_timeout": 30,
            "max_connections": 512,
            "tls": None,
        },
        "authorization": {"token": token},
        "storage": {"base_path": "data", "writer": "process", "write_timeout": 5},
        "pool": {
            "initial_ports": [{"ip": "0.0.0.0", "ports": "25565-25569", "protocol": "tcp"}],
            "host_check": True,
            "require_local_ip": True,
            "reserve_ports": True,
        },
        "firewall": {"enabled": "auto", "chain": "LIGHTD", "insert_jump": False},
        "runtime": {"kind": "auto", "socket": "/var/run/docker.sock", "stop_timeout": 10},
        "repair": {"interval": 60, "idle_passes": 10},
        "metrics": {"enabled": True},
        "events": {"backlog": 10_000, "heartbeat": 15, "client_timeout": 10},
    }


# -- tokens ------------------------------------------------------------------------------------


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_hex(16)


def validate_token(token: str, *, exact: bool = False) -> str:
    """The token, stripped of the whitespace around it (unless ``exact``), or InvalidInput."""
    if not exact:
        token = token.strip()
    if not token.startswith(TOKEN_PREFIX) or not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
        raise InvalidInput(
            f"a token must start with {TOKEN_PREFIX!r} and be {MIN_TOKEN_LENGTH} to "
            f"{MAX_TOKEN_LENGTH} characters long"
        )
    # An HTTP header carries visible ASCII only: any other character could never be sent.
    if not token.isascii() or any(c.isspace() or not c.isprintable() for c in token):
        raise InvalidInput(
            "a token must be visible ASCII characters: no spaces, no control "
            "characters, no letters outside ASCII"
        )
    return token


# -- the file ----------------------------------------------------------------------------------


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--config``, else ``$LIGHTD_CONFIG``, else ``./config.json``, as the operator wrote it."""
    chosen = explicit or os.environ.get("LIGHTD_CONFIG") or DEFAULT_CONFIG_NAME
    return Path(chosen).expanduser()


def write_config(path: Path, raw: dict[str, Any]) -> None:
    """Write atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(raw, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def set_token(raw: dict[str, Any], token: str) -> None:
    """Put ``token`` in ``raw``'s authorization section, every other key of the file kept."""
    section = raw.get("authorization")
    raw["authorization"] = {**(section if isinstance(section, dict) else {}), "token": token}


def read_config(path: Path) -> dict[str, Any]:
    """The JSON object in the file at ``path``; nothing is created or changed."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file (lightd serve creates it; or give --config PATH or $LIGHTD_CONFIG)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: is not a file (--config names the config file itself)")
    try:
        raw: Any = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        raise ConfigError(f"{path}: is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must hold a JSON object, got {shown(raw)}")
    return raw


def load(path: Path) -> Settings:
    """Read and parse the config at ``path``, changing nothing (clients, ``config check``)."""
    settings = parse(read_config(path), path, str(path))
    if not settings.token:
        raise ConfigError(f"{path}: authorization.token is empty (lightd token reset writes one)")
    return settings


def load_or_create(path: Path, check: Callable[[Settings], None] | None = None) -> Settings:
    """Read the config at ``path``, creating it with a fresh token when it does not exist.

    Nothing is written unless the whole file parses and ``check`` (what only the caller can
    check, such as :func:`lightd.bootstrap.preflight`) passes: a bad config stops the start with
    every file as it was.
    """
    if not path.exists():
        raw = default_raw(new_token())
        settings = parse(raw, path, str(path))
        if check is not None:
            check(settings)
        write_config(path, raw)
        log.info("created %s with a new token (lightd token what shows it)", path)
        return settings
    raw = read_config(path)
    settings = parse(raw, path, str(path))
    if check is not None:
        check(settings)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)
        log.warning("%s was readable by others (mode %o); set it to 0600", path, mode)
    if not settings.token:
        token = new_token()
        set_token(raw, token)
        write_config(path, raw)
        log.info("%s had no token; a new one was written", path)
        settings = replace(settings, authorization=AuthorizationSettings(token))
    return settings
