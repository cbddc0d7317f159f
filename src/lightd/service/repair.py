"""The repair loop: compare the pool with the host, say where they disagree, mend the firewall.

Every ``interval`` seconds (and on ``POST /api/v1/repair``) one pass looks for:

``squatter``
    an available pool entry that some other socket of this host has bound (TIME_WAIT aside: no
    process holds that): a server given the port would fail to start.
``orphan``
    an entry held by a container that the engine no longer has (nothing to ask with engine kind
    ``none``); it stays held until the container is deleted or rebound.
``idle``
    an entry marked in use by hand, with nothing bound on it for ``idle_passes`` passes in a row.
``firewall_drift``
    a rule of lightd's chain missing, duplicated or stale: repaired at once by the firewall's
    reconcile, and reported with what was done.

Each pass also writes the kernel's reserved ports again (see service.reserved), which puts back
pool numbers another program dropped from ``ip_local_reserved_ports``.

A finding never frees a port (Kubernetes' repair rule: better to leak a port than to hand it out
twice); the status, the metrics and the log say what was found, the log once per new finding.

A pass reads the pool, reads the socket tables and the engine in a thread, then decides with the
pool as it is by then: an entry counts only if it was in the same state before and after those
reads, so a change made meanwhile (a claim, a container created or rebound) is never reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from lightd.core import holders
from lightd.core.entry import Entry, Key
from lightd.errors import LightdError, NotFound, Unavailable
from lightd.service.containers import ContainerService
from lightd.service.pool_service import PoolService
from lightd.service.ports import Engine, HostSockets, SocketTable
from lightd.service.repair_rules import (
    FINDING_TYPES,
    Finding,
    IdleTracker,
    drift_finding,
    ident_of,
    merge,
    stamp,
)

__all__ = ["DEFAULT_IDLE_PASSES", "DEFAULT_INTERVAL", "FindingsSink", "RepairService"]

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_INTERVAL = 60.0
DEFAULT_IDLE_PASSES = 10
# Entries looked at between two turns of the event loop (a few ms): a pool of 131,070 entries
# must not hold it for the whole pass.
_SLICE = 1024


class FindingsSink(Protocol):
    """Where each pass's counts go (lightd.metrics.Metrics is one)."""

    def repair_findings(self, counts: Mapping[str, int]) -> None: ...


class RepairService:
    def __init__(
        self,
        pools: PoolService,
        containers: ContainerService,
        engine: Engine,
        host: HostSockets | None,
        *,
        interval: float = DEFAULT_INTERVAL,
        idle_passes: int = DEFAULT_IDLE_PASSES,
        metrics: FindingsSink | Callable[[Mapping[str, int]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not interval >= 0:  # NaN too
            raise ValueError(f"repair interval must be 0 (off) or a number of seconds (got {interval})")
        self.pools = pools
        self.containers = containers
        self.engine = engine
        self.host = host
        self.interval = float(interval)
        self.idle = IdleTracker(idle_passes)
        if metrics is not None and not callable(metrics):
            metrics = metrics.repair_findings
        self._record: Callable[[Mapping[str, int]], None] | None = metrics
        self.clock = clock
        self.passes = 0
        self._findings: dict[str, Finding] = {}
        self._drift: list[str] = []  # what the last pass's firewall reconcile mended
        self._last: dict[str, Any] | None = None
        self._current: asyncio.Future[dict[str, Any]] | None = None
        self._loop: asyncio.Task[None] | None = None
        self._stopped = False
        # One worker: the socket tables and the engine are read one after the other, off the loop.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="lightd-repair")

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Run a pass every ``interval`` seconds from now on (none when it is 0)."""
        if self.interval > 0 and self._loop is None and not self._stopped:
            self._loop = asyncio.ensure_future(self._every())

    async def stop(self) -> None:
        """End the loop and a pass under way; a caller waiting for that pass gets Unavailable."""
        self._stopped = True
        for task in (self._loop, self._current):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # A socket-table or engine read still running finishes on its own; nothing waits for it.
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _every(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run()
            except Exception:  # a bug in a pass must not end the loop: the next pass tries again
                log.exception("repair pass failed")

    async def run(self) -> dict[str, Any]:
        """One pass, or the one under way: two never run at once, and callers share its report."""
        if self._stopped:
            raise Unavailable("lightd is stopping; no repair pass was run")
        current = self._current
        if current is None or current.done():
            current = self._current = asyncio.ensure_future(self._pass())
        try:
            # Shielded: a client that hangs up does not cancel the pass the loop shares.
            return await asyncio.shield(current)
        except asyncio.CancelledError:
            if self._stopped and current.cancelled():
                raise Unavailable("lightd is stopping; the repair pass was not finished") from None
            raise

    def status(self) -> dict[str, Any]:
        last = self._last or {}
        return {
            "last_run": last.get("last_run"),
            "findings": [finding.to_json() for finding in self._ordered()],
            "counts": self._counts(),
            "errors": last.get("errors", {}),
            "firewall": last.get("firewall"),
            "passes": self.passes,
            "running": self._current is not None and not self._current.done(),
            "interval": self.interval,
            "idle_passes": self.idle.passes,
        }

    def _ordered(self) -> list[Finding]:
        return sorted(self._findings.values(), key=Finding.sort_key)

    def _counts(self) -> dict[str, int]:
        counts = dict.fromkeys(FINDING_TYPES, 0)
        for finding in self._findings.values():
            counts[finding.type] = counts.get(finding.type, 0) + 1
        return counts

    # -- one pass ----------------------------------------------------------------------------

    async def _pass(self) -> dict[str, Any]:
        started = self.clock()
        errors: dict[str, str] = {}
        found: list[Finding] = []
        firewall = await self._firewall(found, errors, started)
        self.pools.resync_reserved()
        before = await self._classify()
        table = await self._read_host(before, errors)
        managed = await self._read_engine(before, errors)
        after_states = {name: self._container_state(name) for name in before.containers}
        async for finding in self._squatters(before, table, started):
            found.append(finding)
        if table is not None:
            found += await self._idle(before, table, started)
        if managed is not None:
            found += self._orphans(before, after_states, managed, started)
        carried = [
            kind
            for kind, check in (("squatter", "host"), ("idle", "host"), ("orphan", "engine"))
            if check in errors
        ]
        merged = merge(self._findings, found, carried)
        for finding in merged.new:
            log.warning("repair: %s: %s", finding.type, finding.message)
        await self._tell(firewall, [f for f in merged.new if f.type != "firewall_drift"])
        for finding in merged.gone:
            if finding.type != "firewall_drift":  # repaired already, and said so
                log.info("repair: no longer a %s: %s", finding.type, _subject(finding))
        self._findings = {finding.ident: finding for finding in merged.findings}
        self.passes += 1
        report: dict[str, Any] = {
            "last_run": stamp(started),
            "findings": [finding.to_json() for finding in merged.findings],
            "counts": self._counts(),
            "firewall": firewall,
            "errors": errors,
            "seconds": round(max(self.clock() - started, 0.0), 3),
        }
        self._last = report
        if self._record is not None:
            self._record(report["counts"])
        return report

    async def _tell(self, firewall: dict[str, Any] | None, new: list[Finding]) -> None:
        """The stream's events of this pass: the firewall mended, and each new finding."""
        events: list[tuple[str, dict[str, Any]]] = [
            ("repair.finding", {"finding": finding.to_json()}) for finding in new
        ]
        if firewall is not None and (firewall["added"] or firewall["removed"]):
            events.insert(0, ("firewall.repaired", {
                "added": firewall["added"], "removed": firewall["removed"],
                "drift": self._drift,
            }))
        if not events:
            return
        try:
            await self.pools.save((), events)
        except LightdError as exc:  # the status and the log say it all the same
            log.error("repair: its events were not saved: %s", exc.message)

    async def _firewall(
        self, found: list[Finding], errors: dict[str, str], now: float
    ) -> dict[str, Any] | None:
        try:
            report = await self.pools.reconcile_firewall()
        except LightdError as exc:
            errors["firewall"] = exc.message
            self._drift = []
            return None
        added, removed = int(report.get("added", 0)), int(report.get("removed", 0))
        drift = [str(text) for text in report.get("drift", ())]
        self._drift = drift
        found += (drift_finding(text, now, added, removed) for text in drift)
        return {"added": added, "removed": removed, "drift_count": int(report.get("drift_count", len(drift)))}

    async def _classify(self) -> _Before:
        """The entries each check looks at, as the pool has them before the host is read."""
        entries, _ = await self.pools.entries()
        before = _Before()
        for index, entry in enumerate(entries):
            if index and not index % _SLICE:
                await asyncio.sleep(0)
            holder = holders.holder_of(entry)
            if holder is None:
                if self._available(entry):
                    before.free.append(entry.key)
                    before.span(entry)
            elif holder == holders.OPERATOR:
                before.manual.append(entry.key)
                before.span(entry)
            elif holder.name is not None:
                before.held.setdefault(holder.name, []).append(entry.key)
        before.containers = {name: self._container_state(name) for name in before.held}
        return before

    def _available(self, entry: Entry) -> bool:
        # Read only: the pool stays the pool service's own (free and no conflicting entry in use).
        return self.pools.pool.is_available(entry)

    def _container_state(self, internal_id: str) -> tuple[str, str | None] | None:
        try:
            container = self.containers.get(internal_id)
        except NotFound:
            return None
        return container.state, container.engine_id

    async def _in_thread(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _read_host(self, before: _Before, errors: dict[str, str]) -> SocketTable | None:
        host = self.host
        if host is None or not before.protocols:
            return None
        protocols = sorted(before.protocols)
        ports = (before.low, before.high)
        try:
            # TIME_WAIT aside: it is what a connection leaves behind, not a process holding the
            # port (Docker's proxy leaves it on a port for a minute after each connection).
            return await self._in_thread(lambda: host.snapshot(protocols, ports=ports, ignore_time_wait=True))
        except OSError as exc:
            errors["host"] = f"cannot read this host's socket tables: {exc}"
            return None

    async def _read_engine(
        self, before: _Before, errors: dict[str, str]
    ) -> Sequence[Mapping[str, Any]] | None:
        if self.engine.kind == "none" or not before.held:  # no engine, or nobody to ask about
            return None
        try:
            return await self._in_thread(self.engine.list_managed)
        except LightdError as exc:
            errors["engine"] = f"cannot list the engine's containers: {exc.message}"
            return None

    async def _squatters(
        self, before: _Before, table: SocketTable | None, now: float
    ) -> AsyncIterator[Finding]:
        if table is None:
            return
        for index, key in enumerate(before.free):
            if index and not index % _SLICE:
                await asyncio.sleep(0)
            entry = self.pools.lookup(key)
            if entry is None or not self._available(entry):
                continue
            found = table.holders(*key)
            if not found:
                continue
            sockets = [socket.label() for socket in found]
            yield Finding(
                "squatter",
                ident_of("squatter", key),
                key,
                f"{entry.label()} is free in the pool, but another process on this host has it "
                f"bound ({', '.join(sockets[:5])}): a server given this port would fail to start. "
                "Stop that process, or mark the port in use",
                now,
                {"sockets": sockets[:20]},
            )

    async def _idle(self, before: _Before, table: SocketTable, now: float) -> list[Finding]:
        bound: dict[Key, bool] = {}
        for index, key in enumerate(before.manual):
            if index and not index % _SLICE:
                await asyncio.sleep(0)
            entry = self.pools.lookup(key)
            if entry is not None and holders.holder_of(entry) == holders.OPERATOR:
                bound[key] = bool(table.holders(*key))
        findings = []
        for key, (passes, since) in self.idle.observe(bound, now).items():
            label = _label(key)
            findings.append(
                Finding(
                    "idle",
                    ident_of("idle", key),
                    key,
                    f"{label} is marked in use by hand, and nothing on this host has had it bound "
                    f"for {passes} passes in a row; reported only (a stopped server keeps its port): "
                    'free it with PUT .../use {"in_use": false} if nobody needs it',
                    since,
                    {"passes": passes},
                )
            )
        return findings

    def _orphans(
        self,
        before: _Before,
        after: Mapping[str, tuple[str, str | None] | None],
        managed: Sequence[Mapping[str, Any]],
        now: float,
    ) -> list[Finding]:
        alive = {str(info.get("id")) for info in managed}
        findings = []
        for name, keys in before.held.items():
            state = before.containers.get(name)
            # Changed while the engine was asked (created, rebound, deleted): not this pass.
            if state != after.get(name):
                continue
            if state is None:
                why = "which lightd has no record of"
            elif state[0] in ("running", "missing") and state[1] is not None:
                if state[1] in alive:
                    continue
                why = f"which the engine no longer has (engine id {state[1][:12]})"
            else:
                continue
            for key in keys:
                entry = self.pools.lookup(key)
                if entry is None or holders.holder_of(entry) != holders.container_holder(name):
                    continue
                findings.append(
                    Finding(
                        "orphan",
                        ident_of("orphan", key),
                        key,
                        f"{entry.label()} is held by container {name}, {why}; the port stays held "
                        "until the container is deleted or rebound",
                        now,
                        {"container": name},
                    )
                )
        return findings


class _Before:
    """Keys by check, taken before the host and the engine are read."""

    def __init__(self) -> None:
        self.free: list[Key] = []
        self.manual: list[Key] = []
        self.held: dict[str, list[Key]] = {}
        self.containers: dict[str, tuple[str, str | None] | None] = {}
        # What the socket tables are read for: these protocols, ports low..high.
        self.protocols: set[str] = set()
        self.low, self.high = 65535, 1

    def span(self, entry: Entry) -> None:
        self.protocols.add(entry.protocol)
        self.low, self.high = min(self.low, entry.port), max(self.high, entry.port)


def _label(key: Key) -> str:
    return Entry(*key).label()


def _subject(finding: Finding) -> str:
    return _label(finding.key) if finding.key is not None else finding.ident
