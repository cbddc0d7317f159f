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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lightd.config_parse import ConfigError, Section, check_host, check_port, shown
from lightd.errors import InvalidInput

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "ApiSettings",
    "AuthorizationSettings",
    "ConfigError",
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


# -- the tree ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsSettings:
    cert: Path  # absolute: a relative path in the file is relative to the config's folder
    key: Path


@dataclass(frozen=True)
class ApiSettings:
    host: str = "127.0.0.1"
    port: int = 8070  # 0: a port the kernel picks
    access_log: bool = False
    # Seconds a client has to send a request's head (from connect, or from the previous
    # response) and its body, and how many connections are served at once: slow or idle
    # clients must not hold the daemon's file descriptors.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 512
    tls: TlsSettings | None = None  # None: plain HTTP


@dataclass(frozen=True)
class AuthorizationSettings:
    token: str = field(default="", repr=False)


@dataclass(frozen=True)
class StorageSettings:
    base_path: Path = Path("data")  # absolute once parsed: relative to the config's folder
    # "process": transactions are written by a child process (the default, see README);
    # "thread": by a thread of the daemon, for hosts where it must not start processes.
    writer: Literal["process", "thread"] = "process"
    # Seconds the writer may take to confirm a transaction; past it, the changes waiting fail
    # with 503 and the writer is replaced (README, "durable").
    write_timeout: float = 5.0

    @property
    def database_path(self) -> Path:
        return self.base_path / "lightd.sqlite3"


@dataclass(frozen=True)
class InitialPorts:
    """One item of ``pool.initial_ports``, expanded: every (ip, port, protocol) it names."""

    ip: str
    ports: tuple[int, ...]
    protocols: tuple[str, ...]


DEFAULT_INITIAL_PORTS = (InitialPorts("0.0.0.0", tuple(range(25565, 25570)), ("tcp",)),)


@dataclass(frozen=True)
class PoolSettings:
    # Seeded only when the database is created, like the original daemon.
    initial_ports: tuple[InitialPorts, ...] = DEFAULT_INITIAL_PORTS
    host_check: bool = True
    require_local_ip: bool = True
    # Keep pool ports in net.ipv4.ip_local_reserved_ports while lightd runs as root (RESERVE).
    reserve_ports: bool = True


@dataclass(frozen=True)
class FirewallSettings:
    # "auto": on when it can work; "on" (true in the file): refuse to start when it cannot.
    enabled: Literal["auto", "on", "off"] = "auto"
    chain: str = "LIGHTD"
    insert_jump: bool = False
    netns: str | None = None  # a name under /run/netns or a namespace path


@dataclass(frozen=True)
class RuntimeSettings:
    kind: Literal["auto", "docker", "none"] = "auto"
    socket: str = "/var/run/docker.sock"
    stop_timeout: int = 10


@dataclass(frozen=True)
class RepairSettings:
    interval: float = 60.0  # seconds between passes; 0: no loop (POST /api/v1/repair still works)
    idle_passes: int = 10  # passes with nothing bound before a port held by hand is "idle"


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = True


@dataclass(frozen=True)
class Settings:
    """Everything lightd reads from its config, typed; built by :func:`parse` and nothing else."""

    path: Path  # the config file, absolute
    source: str = field(default="", compare=False)  # the file as the operator named it, for messages
    api: ApiSettings = ApiSettings()
    authorization: AuthorizationSettings = AuthorizationSettings()
    storage: StorageSettings = StorageSettings()
    pool: PoolSettings = PoolSettings()
    firewall: FirewallSettings = FirewallSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    repair: RepairSettings = RepairSettings()
    metrics: MetricsSettings = MetricsSettings()

    def error(self, key: str, message: str) -> ConfigError:
        """A refusal of ``key`` found after parsing (:func:`lightd.bootstrap.preflight`)."""
        return ConfigError(f"{self.source or self.path}: {key} {message}")

    # Shorthands for what almost every caller wants.
    @property
    def token(self) -> str:
        return self.authorization.token

    @property
    def database_path(self) -> Path:
        return self.storage.database_path

    def section(self, name: str) -> dict[str, Any]:
        """A section as a plain dict, for code not yet moved to the typed attributes."""
        value = getattr(self, name) if name in SECTIONS else None
        if value is None:
            raise KeyError(name)
        return asdict(value)

    def with_overrides(self, host: str | None = None, port: int | None = None) -> Settings:
        """``serve --host/--port`` over the file's ``api.host``/``api.port``, checked the same way."""
        api = self.api
        if host is not None:
            api = replace(api, host=check_host(host, "--host"))
        if port is not None:
            api = replace(api, port=check_port(port, "--port"))
        return replace(self, api=api)


# -- parsing -----------------------------------------------------------------------------------

SECTIONS = ("api", "authorization", "storage", "pool", "firewall", "runtime", "repair", "metrics")


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
        section = raw.get("authorization")
        raw["authorization"] = {**(section if isinstance(section, dict) else {}), "token": token}
        write_config(path, raw)
        log.info("%s had no token; a new one was written", path)
        settings = replace(settings, authorization=AuthorizationSettings(token))
    return settings
