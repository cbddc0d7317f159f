"""The seed's use cases on the pool: add, get, list, random, use, delete, bulk delete.

Every handler decides and changes the in-memory pool without yielding to other tasks, so two
requests can never both take the same port; then it waits for the change to be durable before
returning. Side effects that may fail (the firewall) happen in between, and a failure undoes the
in-memory change before anything is saved.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightd.core import holders
from lightd.core.changes import Change, DeletePort, put_port
from lightd.core.choose import Picker, choose
from lightd.core.containers import Container
from lightd.core.entry import Entry, Key, entry_json
from lightd.core.leases import Lease
from lightd.core.pool import Pool
from lightd.errors import (
    AlreadyExists,
    Ambiguous,
    Conflict,
    InvalidInput,
    LightdError,
    NoAvailablePorts,
    NotFound,
    StorageError,
)
from lightd.metrics import Metrics, claim_error_reason
from lightd.service.claims import Gate, SlicedClaim
from lightd.service.committer import DEFAULT_TIMEOUT, Committer, ThreadWriter
from lightd.service.events import EventHub
from lightd.service.host_check import HostCheck
from lightd.service.ports import Firewall, Host, NoFirewall, ReservedPorts, Store, Writer
from lightd.service.reserved import ReservedNumbers

__all__ = ["BulkDeleteResult", "PoolService"]

log = logging.getLogger(__name__)

# An event of the stream: its type and its data (service.events).
Event = tuple[str, Mapping[str, Any]]


def ports_json(entries: Iterable[Entry]) -> list[dict[str, Any]]:
    return [entry_json(entry) for entry in entries]


@dataclass
class BulkDeleteResult:
    deleted: list[Entry] = field(default_factory=list)
    not_found: list[dict[str, object]] = field(default_factory=list)
    skipped: list[Entry] = field(default_factory=list)


class PoolService:
    def __init__(
        self,
        store: Store,
        firewall: Firewall | None = None,
        rng: random.Random | None = None,
        host: Host | None = None,
        host_check: bool = True,
        require_local_ip: bool = True,
        writer: Writer | None = None,
        write_timeout: float = DEFAULT_TIMEOUT,
        metrics: Metrics | None = None,
        reserved: ReservedPorts | None = None,
        events: EventHub | None = None,
    ) -> None:
        self.store = store
        # Every change saved here is told on the stream once durable (service.events).
        self.events = events or EventHub(store)
        self.metrics = metrics or Metrics.disabled()
        # How long the writer may take to confirm a transaction before it is given up.
        self.write_timeout = write_timeout
        # Writes the store's transactions off the event loop (the store's own thread by default).
        self.writer: Writer = writer or ThreadWriter(store)
        self.firewall: Firewall = firewall or NoFirewall()
        self.host = host
        self.host_check = HostCheck(host if host_check else None)
        self.require_local_ip = require_local_ip and host is not None
        # Port choice needs spread, not secrecy: the fast generator, seeded from the OS.
        self.rng = rng or random.Random()
        self.pool = Pool()
        # Keys whose firewall rule is being opened or closed: not in the pool, not free either.
        self._in_flight: set[Key] = set()
        self.committer: Committer | None = None
        # Held by a claim too big for one slice of the loop; the pool's other users wait for it.
        self.gate = Gate()
        # Called after the pool is rebuilt from the store, for state kept beside it (containers).
        self.reload_hooks: list[Callable[[], None]] = []
        # The pool's port numbers in the kernel's reserved ports (service.reserved).
        self.reserved = ReservedNumbers(reserved)
        self.reload_hooks.append(lambda: self.reserved.reset(self.pool.unsorted()))

    # -- life cycle --------------------------------------------------------------------------

    def load(self) -> None:
        """Build the in-memory pool from the store (at start-up, and after a failed commit)."""
        self.pool = Pool(self.store.load_entries())
        for hook in self.reload_hooks:
            hook()
        if self.committer is not None:
            self.events.resync()  # a write given up as overdue may have been saved after all
        self.events.load()

    async def start(self) -> None:
        await self.writer.start()
        self.committer = Committer(self.writer.write, on_failure=self.load,
                                   timeout=self.write_timeout, abandon=self.writer.abandon,
                                   metrics=self.metrics, on_durable=self.events.durable)
        self.committer.start()

    async def stop(self) -> None:
        if self.committer is not None:
            await self.committer.close()
            await self.writer.close()

    def resync_reserved(self) -> None:
        """Write the kernel's reserved ports again: puts back pool numbers another program
        dropped from the list (cheap when none did: one read of it)."""
        self.reserved.resync()

    async def reconcile_firewall(self) -> dict[str, Any]:
        """Make the firewall equal to the pool (rules missing, stale or duplicated).

        Not while a rule is being opened or closed: its entry is not in the pool yet (or any
        more), so a reconcile given the pool then would undo that change once it is done (the
        repair loop reconciles live, while clients add and delete). Once none is, the firewall
        takes the pool as it is now before any later change can reach it.
        """
        await self._settled()
        while self._in_flight:
            await asyncio.sleep(0.01)  # rare and short (one iptables batch): no event to keep
            await self._settled()
        return await self.firewall.reconcile(self.pool.entries())

    async def save(self, changes: Sequence[Change], events: Sequence[Event] = ()) -> None:
        """Make ``changes`` durable (sharing a transaction with concurrent ones), with the
        ``events`` that tell of them: those are told once the transaction is durable."""
        assert self.committer is not None, "PoolService.start() was not called"
        if not events:
            await self.committer.submit(changes)
            return
        # Made and submitted without a yield between, so that ids go in the order of commits.
        made = [self.events.record(kind, data) for kind, data in events]
        trim = self.events.trim(made)
        await self.committer.submit([*changes, trim] if trim else changes, made)

    async def tell(self, kind: str, data: Mapping[str, Any]) -> None:
        """Save and tell an event that goes with no change of the pool (the repair loop's)."""
        await self.save((), [(kind, data)])

    async def unclaimed(self) -> None:
        """Wait until no claim taken in slices holds the pool (see service.claims).

        Everything that reads or changes entries calls this first, then decides without
        yielding; other services too (a container taking its ports).
        """
        if self.gate.held:
            await self.gate.wait()

    async def _settled(self) -> None:
        await self.unclaimed()
        if self.committer is not None and self.committer.busy:
            await self.committer.barrier()

    # -- reading -----------------------------------------------------------------------------

    async def get(self, ip: str, port: int, protocol: str | None) -> Entry:
        await self._settled()
        return self.pool.resolve(ip, port, protocol)

    async def entries(
        self,
        ip: str | None = None,
        protocol: str | None = None,
        in_use: bool | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> tuple[list[Entry], int]:
        """Entries in order, filtered, then paged; and how many matched before paging."""
        await self._settled()
        entries = self.pool.entries()
        if ip is not None or protocol is not None or in_use is not None:
            entries = [
                e for e in entries
                if (ip is None or e.ip == ip)
                and (protocol is None or e.protocol == protocol)
                and (in_use is None or e.in_use == in_use)
            ]
        total = len(entries)
        end = None if limit is None else offset + limit
        return (entries[offset:end] if offset or end is not None else entries), total

    async def random(self, ip: str | None = None, protocol: str | None = None) -> Entry:
        await self._settled()
        entry = self.pool.random(self.rng, ip=ip, protocol=protocol, reject=self.host_check.reject())
        if entry is None:
            raise NoAvailablePorts()
        return entry

    # -- changing ----------------------------------------------------------------------------

    def _require_local(self, ip: str) -> None:
        if self.require_local_ip and self.host is not None and not self.host.is_local_address(ip):
            raise InvalidInput(
                f"ip {ip} is not an address of this host, so no server could bind it; add it to "
                "an interface first, or set pool.require_local_ip to false"
            )

    async def add(self, ip: str, port: int, protocol: str, note: str | None = None) -> Entry:
        self._require_local(ip)
        entry = Entry(ip, port, protocol, note=note)
        if entry.key in self.pool or entry.key in self._in_flight:
            raise AlreadyExists()
        await self._insert([entry])
        return entry

    async def add_many(
        self, ip: str, protocols: Sequence[str], ports: Sequence[int], note: str | None = None
    ) -> tuple[list[Entry], list[Entry]]:
        """Add every (port, protocol) not in the pool yet, in one transaction.

        Returns the entries added and the ones skipped because they existed already.
        """
        self._require_local(ip)
        added: list[Entry] = []
        skipped: list[Entry] = []
        for protocol in protocols:
            for port in ports:
                key = (ip, port, protocol)
                existing = self.pool.get(key)
                if existing is not None or key in self._in_flight:
                    skipped.append(existing or Entry(ip, port, protocol))
                else:
                    added.append(Entry(ip, port, protocol, note=note))
        if added:
            await self._insert(added)
        else:
            await self._settled()
        return added, skipped

    async def _insert(self, entries: list[Entry]) -> None:
        """Open the firewall for new entries, then put them in the pool and save them.

        While the firewall works their keys are reserved (another add of them is refused), but
        they are not in the pool yet: nothing can claim an entry whose rule may still fail.
        """
        keys = [entry.key for entry in entries]
        self._in_flight.update(keys)
        try:
            await self.firewall.open(entries)
        finally:
            self._in_flight.difference_update(keys)
        for entry in entries:
            self.pool.add(entry)
        self.reserved.added(entries)
        try:
            await self.save([put_port(e) for e in entries], [("port.added", {"ports": ports_json(entries)})])
        except StorageError:
            await self._undo_firewall(self.firewall.close, entries)
            raise
        finally:
            self.reserved.sync()  # once settled (a failed save rebuilt the pool and recounted)

    async def claim(
        self,
        count: int,
        protocols: tuple[str, ...] = ("tcp",),
        ip: str | None = None,
        contiguous: bool = False,
        note: str | None = None,
        container: str | None = None,
        lease: Lease | None = None,
    ) -> list[Entry]:
        """Pick ``count`` available port numbers and mark them in use, all in one transaction.

        Held by ``lease`` when given (saved with them), else by the operator (or ``container``).

        What the pool's counts cannot meet is refused before anything is drawn. A claim whose
        work outlasts a slice of the loop goes on in slices and holds the pool meanwhile
        (service.claims): nobody sees or takes its entries half claimed, and if it fails it
        gives back everything it took.
        """
        try:
            entries = await self._claim(count, protocols, ip, contiguous, note, container, lease)
        except LightdError as exc:
            self.metrics.claim_failed(claim_error_reason(exc))
            raise
        self.metrics.claimed(len(entries))
        return entries

    async def _claim(
        self,
        count: int,
        protocols: tuple[str, ...],
        ip: str | None,
        contiguous: bool,
        note: str | None,
        container: str | None,
        lease: Lease | None,
    ) -> list[Entry]:
        await self.unclaimed()
        holder = holders.OPERATOR if container is None else holders.container_holder(container)
        if lease is not None:
            holder = holders.lease_holder(lease.id)
        also = [] if lease is None else [lease.change()]

        def told(entries: list[Entry]) -> list[Event]:
            summary = None if lease is None else lease.summary()
            return [("ports.claimed", {"ports": ports_json(entries), "lease": summary})]

        if count == 1:  # the common claims (one port, or one number on both), in one go as ever
            entries = self.choose(1, protocols, ip, contiguous)
            for entry in entries:
                holders.take(self.pool, entry, holder)
                if note is not None:
                    self.pool.set_note(entry, note)
            await self.save([*map(put_port, entries), *also], told(entries))
            return entries
        picker = Picker(
            self.pool, self.rng, count, protocols, ip, contiguous, self.host_check.reject()
        )
        if not picker.possible():
            raise NoAvailablePorts()
        sliced = SlicedClaim(lambda: self.pool, self.gate, picker, holder, note)
        entries, changes = await sliced.take()
        try:
            await self.save([*changes, *also], told(entries))
        finally:
            sliced.finish()
        return entries

    def choose(
        self, count: int, protocols: tuple[str, ...], ip: str | None = None, contiguous: bool = False
    ) -> list[Entry]:
        """Available entries to claim, none bound on the host; raises NoAvailablePorts."""
        picked = choose(
            self.pool, self.rng, count, protocols, ip, contiguous, self.host_check.reject()
        )
        if picked is None:
            raise NoAvailablePorts()
        return [entry for item in picked for entry in item]

    async def set_use(
        self, ip: str, port: int, protocol: str | None, in_use: bool
    ) -> tuple[Entry, bool]:
        """Mark an entry in use by the operator, or free the operator's; return it and whether
        this call changed it. Whoever holds an entry keeps it (core.holders decides)."""
        await self.unclaimed()
        entry = self.pool.resolve(ip, port, protocol)
        if in_use:
            changed = holders.mark_in_use(self.pool, entry)
        else:
            changed = holders.release(self.pool, entry, holders.OPERATOR)
        if not changed:
            await self._settled()
            return entry, False
        kind = "port.used" if in_use else "port.freed"
        await self.save([put_port(entry)], [(kind, {"ports": ports_json([entry])})])
        return entry, True

    async def delete(self, ip: str, port: int, protocol: str | None) -> Entry:
        await self.unclaimed()
        entry = self.pool.resolve(ip, port, protocol)
        holders.check_removable(entry)
        await self._remove([entry])
        return entry

    async def bulk_delete(self, items: Iterable[tuple[str, int, str | None]]) -> BulkDeleteResult:
        """Delete many entries in one transaction; missing ones and held ones are reported."""
        await self.unclaimed()
        # Keyed, so a body repeating items costs no more than one listing each (in order).
        chosen: dict[Key, Entry] = {}
        held: dict[Key, Entry] = {}
        missing: dict[tuple[str, int, str | None], dict[str, object]] = {}
        for ip, port, protocol in items:
            try:
                entry = self.pool.resolve(ip, port, protocol)
            except Ambiguous as exc:
                raise Ambiguous(f"Nothing was deleted: {exc.message}", **exc.details) from None
            except NotFound:
                item: dict[str, object] = {"ip": ip, "port": port}
                if protocol is not None:
                    item["protocol"] = protocol
                missing.setdefault((ip, port, protocol), item)
                continue
            try:
                holders.check_removable(entry)
            except Conflict:
                held[entry.key] = entry
            else:
                chosen[entry.key] = entry
        result = BulkDeleteResult(list(chosen.values()), list(missing.values()), list(held.values()))
        if not result.deleted:
            await self._settled()
            return result
        await self._remove(result.deleted)
        return result

    async def _remove(self, entries: list[Entry]) -> None:
        """Withdraw entries and save their deletion; if that fails, open their rules again."""
        await self._withdraw(entries)
        try:
            await self.save([DeletePort(*e.key) for e in entries],
                            [("port.deleted", {"ports": ports_json(entries)})])
        except StorageError:
            await self._undo_firewall(self.firewall.open, entries)
            raise
        finally:
            self.reserved.sync()

    async def _withdraw(self, entries: list[Entry]) -> None:
        """Take entries out of the pool and close their rules; on failure put them back."""
        keys = [entry.key for entry in entries]
        for entry in entries:
            self.pool.remove(entry.key)
        self.reserved.removed(entries)
        self._in_flight.update(keys)  # until the rules are closed, the keys are not free to add
        try:
            await self.firewall.close(entries)
        except BaseException:
            for entry in entries:
                self.pool.add(entry)
            self.reserved.added(entries)
            raise
        finally:
            self._in_flight.difference_update(keys)

    # -- holders other than the operator (containers) ------------------------------------------
    # Other services change entries only through these, so the rule stays in core.holders and
    # the pool stays this service's own.

    def lookup(self, key: Key) -> Entry | None:
        return self.pool.get(key)

    def leased(self, lease_id: str) -> list[Entry]:
        """The entries lease ``lease_id`` holds, in the pool's order."""
        return self.pool.leased(lease_id)

    def hand_over(self, entry: Entry, holder: holders.Holder, to: holders.Holder | None) -> bool:
        """Move ``entry`` from ``holder`` to ``to`` (None: free it), in memory; False when
        ``holder`` does not hold it (see core.holders.hand_over)."""
        return holders.hand_over(self.pool, entry, holder, to)

    def take(self, entry: Entry, holder: holders.Holder) -> bool:
        """Give ``entry`` to ``holder`` in memory (the caller saves); see core.holders.take."""
        return holders.take(self.pool, entry, holder)

    def release(self, entries: Iterable[Entry], holder: holders.Holder) -> list[Entry]:
        """Free, in memory, the entries among ``entries`` that ``holder`` holds, only those."""
        released = holders.held_by(entries, holder)
        for entry in released:
            holders.release(self.pool, entry, holder)
        return released

    def cross_check(
        self, containers: Mapping[str, Container], leases: Iterable[str] = ()
    ) -> list[holders.Repair]:
        """Repair, in memory, every disagreement of holders with the containers' bindings and
        the leases kept (core.holders)."""
        return holders.cross_check(self.pool, containers, frozenset(leases))

    def stored_containers(self) -> list[str]:
        """The containers kept beside the pool in the store, as saved JSON text."""
        return self.store.load_containers()

    def stored_leases(self) -> list[Lease]:
        """The leases kept beside the pool in the store."""
        return self.store.load_leases()

    @staticmethod
    async def _undo_firewall(
        action: Callable[[Sequence[Entry]], Awaitable[None]], entries: Sequence[Entry]
    ) -> None:
        """Put the firewall back after the store refused a change; reconcile mends the rest."""
        try:
            await action(entries)
        except LightdError as exc:
            log.error("firewall left out of step with the pool until reconcile: %s", exc)
