"""The composition root: the one place where adapters are chosen and wired together."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from lightd import __version__
from lightd.adapters import engine as engines
from lightd.adapters import host, iptables, locks, reserved_ports
from lightd.adapters.sqlite_store import SqliteStore
from lightd.adapters.sqlite_writer import SqliteWriter
from lightd.config import InitialPorts, Settings
from lightd.core.changes import PutPort
from lightd.errors import LightdError
from lightd.metrics import Metrics
from lightd.service.committer import ThreadWriter
from lightd.service.containers import ContainerService
from lightd.service.events import EventHub
from lightd.service.leases import LeaseService
from lightd.service.pool_service import PoolService
from lightd.service.ports import Engine, Firewall, NoFirewall, ReservedPorts, Writer
from lightd.service.repair import RepairService
from lightd.tls import api_security

__all__ = ["Lightd", "build", "preflight"]

log = logging.getLogger(__name__)


def initial_changes(spec: tuple[InitialPorts, ...]) -> list[PutPort]:
    """``pool.initial_ports`` (checked and expanded by the config) as the store's changes."""
    return [PutPort(item.ip, port, protocol, False, None, None)
            for item in spec for protocol in item.protocols for port in item.ports]


def preflight(settings: Settings) -> None:
    """What the config cannot know alone, checked before any file or folder is created: a pool
    about to be seeded must only hold addresses of this host (``pool.require_local_ip``), or the
    database would be created with entries no server can bind, and never seeded again."""
    if not settings.pool.require_local_ip or settings.database_path.exists():
        return
    for index, item in enumerate(settings.pool.initial_ports):
        if not host.is_local_address(item.ip):
            raise settings.error(
                f"pool.initial_ports[{index}].ip",
                f'must be an address of this host (or 0.0.0.0, ::), got "{item.ip}"; add it to an '
                "interface first, or set pool.require_local_ip to false",
            )


def choose_firewall(settings: Settings) -> tuple[Firewall, str]:
    """iptables when ``firewall.enabled`` allows it and it can work; else none, saying why."""
    wanted = settings.firewall
    prefix = iptables.netns_prefix(wanted.netns) if wanted.netns else []
    on, reason = iptables.detect(wanted.enabled, prefix)  # raises if "true" cannot work
    if not on:
        return NoFirewall(reason), "none"
    firewall = iptables.IptablesFirewall(
        wanted.chain, prefix, insert_jump=wanted.insert_jump, reason=reason
    )
    return firewall, "iptables"


def hold_firewall_chain(settings: Settings) -> locks.HeldLock:
    """One daemon per chain per network namespace: at its start each one removes the rules of
    its chain that its own pool lacks, so two would delete each other's."""
    netns = settings.firewall.netns
    return locks.hold_chain(settings.firewall.chain,
                            iptables.netns_path(netns) if netns else "/proc/self/ns/net")


def choose_writer(settings: Settings, store: SqliteStore) -> Writer:
    """How the store's transactions leave the event loop: ``storage.writer``."""
    if settings.storage.writer == "thread":
        return ThreadWriter(store)
    return SqliteWriter(store.path)


def choose_reserved_ports(settings: Settings, on_count: Callable[[int], None]) -> ReservedPorts:
    """The kernel's reserved ports when ``pool.reserve_ports`` allows it and lightd can write
    them; turned off but writable, the kernel's list still, to take back a previous run's."""
    on, reason = reserved_ports.detect(settings.pool.reserve_ports)
    writable = on or reserved_ports.detect(True)[0]
    if not writable:
        return reserved_ports.Unreserved(reason)
    record = settings.storage.base_path / reserved_ports.RECORD_NAME
    return reserved_ports.KernelReservation(record, reserve=on, reason=reason, on_count=on_count)


# Written out so that mypy checks each engine against the service's Protocol on its own.
_ENGINES: tuple[type[Engine], ...] = (engines.DockerEngine, engines.NoEngine)


def choose_engine(settings: Settings) -> tuple[Engine, str]:
    return engines.detect(settings.runtime.kind, settings.runtime.socket)


class Lightd:
    """The running daemon: settings, adapters and services, started and stopped together."""

    def __init__(
        self,
        settings: Settings,
        firewall: Firewall | None = None,
        engine: Engine | None = None,
        reserved: ReservedPorts | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``clock``: the wall clock leases expire by (epoch seconds; tests pass their own)."""
        self.settings = settings
        clock = clock or time.time
        self.token = settings.token
        # status()["api"]: whether the token travels encrypted (serve logs the warning).
        self.api_security = api_security(settings.api.host, settings.api.tls is not None)
        self.store = SqliteStore(settings.database_path)
        self.chain_lock: locks.HeldLock | None = None
        if firewall is None:
            firewall, kind = choose_firewall(settings)
            if kind == "iptables":  # taken here, before start() reconciles anything
                self.chain_lock = hold_firewall_chain(settings)
        self.firewall: Firewall = firewall
        if engine is None:
            engine, self.runtime_reason = choose_engine(settings)
        else:
            self.runtime_reason = f"{engine.kind} engine given by the caller"
        self.engine: Engine = engine
        # One per daemon, with its own registry; the pool and firewall gauges are read at scrape.
        self.metrics = Metrics() if settings.metrics.enabled else Metrics.disabled()
        pool = settings.pool
        self.events = EventHub(self.store, backlog=settings.events.backlog,
                               heartbeat=settings.events.heartbeat, clock=clock)
        self.pool = PoolService(
            self.store,
            self.firewall,
            host=host,
            host_check=pool.host_check,
            require_local_ip=pool.require_local_ip,
            writer=choose_writer(settings, self.store),
            write_timeout=settings.storage.write_timeout,
            metrics=self.metrics,
            reserved=reserved or choose_reserved_ports(settings, self.metrics.reserved_ports),
            events=self.events,
        )
        self.leases = LeaseService(self.pool, clock=clock, metrics=self.metrics)
        self.metrics.watch_pool(lambda: self.pool.pool)
        self.metrics.watch_firewall(self.firewall.status)
        self.containers = ContainerService(
            self.pool, self.engine, stop_timeout=settings.runtime.stop_timeout, leases=self.leases
        )
        self.metrics.watch_live(lambda: {
            "leases": len(self.leases.leases),
            "event_subscribers": self.events.subscribers,
            "events": self.events.published,
        })
        self.repair = RepairService(
            self.pool, self.containers, self.engine, host, interval=settings.repair.interval,
            idle_passes=settings.repair.idle_passes, metrics=self.metrics,
        )
        self.startup: dict[str, Any] = {}

    async def start(self) -> None:
        self.store.open()
        if self.store.created:
            seed = initial_changes(self.settings.pool.initial_ports)
            self.store.apply(seed)
            log.info("created %s with %d initial ports", self.store.path, len(seed))
        # The store's writer process starts (up to waiting for it) while the pool loads.
        starting = asyncio.ensure_future(self.pool.start())
        await asyncio.sleep(0)
        try:
            self.pool.load()
        finally:
            await starting
        log.info("pool loaded: %d entries from %s", len(self.pool.pool), self.store.path)
        await self._reconcile_firewall()
        await self._check_holders()
        await self._expire_leases()
        await self._reconcile_containers()
        # The pool is a large, long-lived heap: keep the cyclic GC from walking it again and again.
        gc.collect()
        gc.freeze()
        # Requests that wait for a commit answer in bursts (one per transaction), and each burst
        # of allocations crossed the default threshold of 700: ~25 young collections per
        # transaction walking the requests still in flight, about 4 us of every claim. Their
        # objects die young; a collection every 50,000 net allocations still bounds the garbage.
        gc.set_threshold(50_000, 10, 10)
        self.repair.start()  # its first pass one interval from now: start-up has just reconciled
        self.leases.start()

    async def _reconcile_firewall(self) -> None:
        try:
            report = await self.firewall.reconcile(self.pool.pool.entries())
        except LightdError as exc:
            # With firewall.enabled true the daemon must not run without its rules.
            if self.settings.firewall.enabled == "on":
                raise
            log.error("firewall reconcile failed; serving without it: %s", exc.message)
            self.startup["firewall"] = {"error": exc.message}
            return
        self.startup["firewall"] = report
        log.info("firewall reconciled: %s", report)

    async def _check_holders(self) -> None:
        """Every entry's holder agrees with the containers' bindings before anything is served."""
        problems = await self.containers.check_holders()
        self.startup["holders"] = {"count": len(problems), "problems": problems[:50]}

    async def _expire_leases(self) -> None:
        """Leases that ran out while the daemon was down free their ports before it serves."""
        expired = await self.leases.expire_due()
        self.startup["leases"] = {"expired": expired, "held": len(self.leases.leases)}

    async def _reconcile_containers(self) -> None:
        try:
            report = await self.containers.reconcile()
        except LightdError as exc:
            log.error("containers not reconciled with the engine: %s", exc.message)
            self.startup["containers"] = {"error": exc.message}
            return
        self.startup["containers"] = report
        if any(report.values()):
            log.warning("containers reconciled: %s", report)

    async def stop(self) -> None:
        await self.leases.stop()
        await self.repair.stop()
        await self.pool.stop()
        await self.containers.close()
        self.store.close()
        if self.chain_lock is not None:
            self.chain_lock.release()

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "api": self.api_security,
            "pool": {
                "entries": len(self.pool.pool),
                "available": self.pool.pool.available_count(),
                "database": str(self.store.path),
                "transactions": 0 if self.pool.committer is None else self.pool.committer.transactions,
                "host_check": self.pool.host_check.enabled,
                "require_local_ip": self.pool.require_local_ip,
            },
            "firewall": self.firewall.status(),
            "reserved_ports": self.pool.reserved.status(),
            "runtime": {"kind": self.engine.kind, "reason": self.runtime_reason,
                        "containers": len(self.containers.containers)},
            "storage": self._storage_status(),
            "startup": self.startup,
            "repair": self.repair.status(),
            "leases": {"count": len(self.leases.leases), "expired": self.leases.expired},
            "events": {"last_id": self.events.last_id, "subscribers": self.events.subscribers,
                       "backlog": self.events.backlog},
        }

    def _storage_status(self) -> dict[str, Any]:
        """Unhealthy while a write is overdue, after a failed one, or while the disk is full."""
        committer = self.pool.committer
        health: dict[str, Any] = {"healthy": True, "reason": None, "since": None}
        if committer is not None:
            health = committer.health()
        full = self.store.reserve.problem()
        if full is not None and health["healthy"]:
            health = {"healthy": False, "reason": full, "since": None}
        return {**health, "disk_full": full is not None, "write_timeout": self.pool.write_timeout}


def build(settings: Settings) -> Lightd:
    return Lightd(settings)
