"""The composition root: the one place where adapters are chosen and wired together."""

from __future__ import annotations

import logging
from typing import Any

from lightd import __version__
from lightd.adapters import host
from lightd.adapters.sqlite_store import SqliteStore
from lightd.config import Settings
from lightd.core.changes import PutPort
from lightd.core.entry import parse_ip
from lightd.core.ranges import parse_port_spec, parse_protocols
from lightd.errors import InvalidInput
from lightd.service.pool_service import PoolService
from lightd.service.ports import Firewall, NoFirewall

__all__ = ["Lightd", "build"]

log = logging.getLogger(__name__)


def initial_changes(spec: list[dict[str, Any]]) -> list[PutPort]:
    changes: list[PutPort] = []
    for index, item in enumerate(spec):
        field = f"pool.initial_ports[{index}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"{field} must be an object with ip, ports and protocol")
        ip = parse_ip(item.get("ip", "0.0.0.0"), f"{field}.ip")
        for protocol in parse_protocols(item.get("protocol", "tcp"), f"{field}.protocol"):
            for port in parse_port_spec(item.get("ports"), f"{field}.ports"):
                changes.append(PutPort(ip, port, protocol, False, None, None))
    return changes


class Lightd:
    """The running daemon: settings, adapters and services, started and stopped together."""

    def __init__(self, settings: Settings, firewall: Firewall | None = None) -> None:
        self.settings = settings
        self.token = settings.token
        self.store = SqliteStore(settings.database_path)
        self.firewall: Firewall = firewall or NoFirewall("not configured")
        pool = settings.section("pool")
        self.pool = PoolService(
            self.store,
            self.firewall,
            host=host,
            host_check=bool(pool["host_check"]),
            require_local_ip=bool(pool["require_local_ip"]),
        )

    async def start(self) -> None:
        self.store.open()
        if self.store.created:
            seed = initial_changes(self.settings.initial_ports)
            self.store.apply(seed)
            log.info("created %s with %d initial ports", self.store.path, len(seed))
        self.pool.load()
        self.pool.start()
        log.info("pool loaded: %d entries from %s", len(self.pool.pool), self.store.path)

    async def stop(self) -> None:
        await self.pool.stop()
        self.store.close()

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "pool": {
                "entries": len(self.pool.pool),
                "available": self.pool.pool.available_count(),
                "database": str(self.store.path),
            },
            "firewall": self.firewall.status(),
        }


def build(settings: Settings) -> Lightd:
    return Lightd(settings)
