"""The typed settings tree: one frozen dataclass per section of ``config.json``.

Built by :func:`lightd.config.parse` and nothing else; the defaults here are the documented ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from lightd.config_parse import ConfigError, check_host, check_port

__all__ = [
    "DEFAULT_INITIAL_PORTS",
    "ApiSettings",
    "AuthorizationSettings",
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
]


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
class EventsSettings:
    backlog: int = 10_000  # events kept in the database for subscribers that reconnect
    heartbeat: float = 15.0  # seconds of silence before a comment keeps a stream alive
    # Seconds a client may leave what lightd writes to it untaken (a stream that stops
    # reading, any answer) before its connection is closed.
    client_timeout: float = 10.0


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
    events: EventsSettings = EventsSettings()

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

    def with_overrides(self, host: str | None = None, port: int | None = None) -> Settings:
        """``serve --host/--port`` over the file's ``api.host``/``api.port``, checked the same way."""
        api = self.api
        if host is not None:
            api = replace(api, host=check_host(host, "--host"))
        if port is not None:
            api = replace(api, port=check_port(port, "--port"))
        return replace(self, api=api)
