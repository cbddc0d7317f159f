"""The one settings object, read from ``config.json`` once at start.

The file is created on first start with a fresh token and mode 0600; lightd never widens that
mode and tightens a wider one it finds. Keys missing from an existing file take their defaults,
so a config written by an older lightd keeps working.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightd.errors import InvalidInput

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "Settings",
    "config_path",
    "load_or_create",
    "new_token",
    "validate_token",
    "write_config",
]

log = logging.getLogger(__name__)

DEFAULT_CONFIG_NAME = "config.json"
TOKEN_PREFIX = "lightd_"
MIN_TOKEN_LENGTH = 20
MAX_TIMEOUT = 86_400
MAX_CONNECTIONS = 1_000_000

DEFAULTS: dict[str, Any] = {
    # Seconds a client has to send a request's head (from connect, or from the previous
    # response) and its body, and how many connections are served at once: slow or idle
    # clients must not hold the daemon's file descriptors.
    "api": {"host": "127.0.0.1", "port": 8070, "access_log": False,
            "header_timeout": 10, "body_timeout": 30, "max_connections": 512},
    "authorization": {"token": ""},
    # "process": transactions are written by a child process (the default, see README);
    # "thread": by a thread of the daemon, for hosts where it must not start processes.
    # write_timeout: seconds the writer may take to confirm a transaction; past it, the
    # changes waiting fail with 503 and the writer is replaced (README, "durable").
    "storage": {"base_path": "data", "writer": "process", "write_timeout": 5},
    "pool": {
        # Seeded only when the database is created, like the original daemon.
        "initial_ports": [{"ip": "0.0.0.0", "ports": "25565-25569", "protocol": "tcp"}],
        "host_check": True,
        "require_local_ip": True,
    },
    "firewall": {"enabled": "auto", "chain": "LIGHTD", "insert_jump": False},
    "runtime": {"kind": "auto", "socket": "/var/run/docker.sock", "stop_timeout": 10},
}


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_hex(16)


def validate_token(token: str) -> str:
    token = token.strip()
    if not token.startswith(TOKEN_PREFIX) or len(token) < MIN_TOKEN_LENGTH:
        raise InvalidInput(
            f"a token must start with {TOKEN_PREFIX!r} and be at least "
            f"{MIN_TOKEN_LENGTH} characters long"
        )
    if any(c.isspace() or not c.isprintable() for c in token):
        raise InvalidInput("a token must not contain spaces or control characters")
    return token


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--config``, else ``$LIGHTD_CONFIG``, else ``./config.json``."""
    chosen = explicit or os.environ.get("LIGHTD_CONFIG") or DEFAULT_CONFIG_NAME
    return Path(chosen).expanduser().absolute()


@dataclass(frozen=True)
class Settings:
    path: Path
    raw: dict[str, Any] = field(repr=False)

    def _get(self, section: str, key: str) -> Any:
        value = self.raw.get(section, {}).get(key)
        return DEFAULTS[section][key] if value is None else value

    @property
    def host(self) -> str:
        return str(self._get("api", "host"))

    @property
    def port(self) -> int:
        return int(self._get("api", "port"))

    @property
    def access_log(self) -> bool:
        return bool(self._get("api", "access_log"))

    @property
    def header_timeout(self) -> float:
        return _positive_number(self._get("api", "header_timeout"), "api.header_timeout")

    @property
    def body_timeout(self) -> float:
        return _positive_number(self._get("api", "body_timeout"), "api.body_timeout")

    @property
    def max_connections(self) -> int:
        value = self._get("api", "max_connections")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONNECTIONS:
            raise InvalidInput(f"api.max_connections must be an integer from 1 to {MAX_CONNECTIONS} "
                               f"(got {_shown(value)})")
        return value

    @property
    def token(self) -> str:
        return str(self._get("authorization", "token"))

    @property
    def base_path(self) -> Path:
        base = Path(str(self._get("storage", "base_path"))).expanduser()
        return base if base.is_absolute() else self.path.parent / base

    @property
    def database_path(self) -> Path:
        return self.base_path / "lightd.sqlite3"

    @property
    def write_timeout(self) -> float:
        return _positive_number(self._get("storage", "write_timeout"), "storage.write_timeout")

    @property
    def initial_ports(self) -> list[dict[str, Any]]:
        return list(self._get("pool", "initial_ports"))

    def section(self, name: str) -> dict[str, Any]:
        """A section's settings over its defaults; a key set to null takes its default."""
        merged: dict[str, Any] = copy.deepcopy(DEFAULTS.get(name, {}))
        merged.update((key, value) for key, value in self.raw.get(name, {}).items()
                      if value is not None)
        return merged

    def with_overrides(self, host: str | None = None, port: int | None = None) -> Settings:
        raw = copy.deepcopy(self.raw)
        api = raw.setdefault("api", {})
        if host is not None:
            api["host"] = host
        if port is not None:
            api["port"] = port
        return Settings(self.path, raw)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _positive_number(value: Any, key: str) -> float:
    # bool is an int to Python; NaN and infinity would never fire; the bound keeps the timer
    # arithmetic in range.
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not 0 < value <= MAX_TIMEOUT or not math.isfinite(value)):
        raise InvalidInput(f"{key} must be a number of seconds above 0 and at most {MAX_TIMEOUT} "
                           f"(got {_shown(value)})")
    return float(value)


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
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidInput(f"{path} must hold a JSON object")
    return dict(raw)


def load_or_create(path: Path) -> Settings:
    """Read the config at ``path``, creating it with a fresh token when it does not exist."""
    if not path.exists():
        raw = copy.deepcopy(DEFAULTS)
        raw["authorization"]["token"] = new_token()
        write_config(path, raw)
        log.info("created %s with a new token (lightd token what shows it)", path)
        return Settings(path, raw)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)
        log.warning("%s was readable by others (mode %o); set it to 0600", path, mode)
    raw = read_config(path)
    settings = Settings(path, raw)
    if not settings.token:
        raw.setdefault("authorization", {})["token"] = new_token()
        write_config(path, raw)
        log.info("%s had no token; a new one was written", path)
    else:
        validate_token(settings.token)
    return settings
