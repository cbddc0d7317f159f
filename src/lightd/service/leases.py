"""Leases: claims with a ttl, renewed, released, kept by hand, or freed when they run out.

Each use case decides and changes memory without yielding, then saves, as the pool's do; the
entries a lease holds are the pool's (:meth:`PoolService.leased`), the leases themselves are kept
here and in the store's ``leases`` table.

Expiry is by wall clock (``clock``, epoch seconds) against the ``expires_at`` saved with each
lease: a sweeper wakes at the next expiry (and at least every ``SWEEP_EVERY`` seconds, so a clock
that jumps is followed) and frees what is due in one transaction; every lease operation sweeps
first, so a lease past its time is gone for them even before the sweeper ran. At start-up the
daemon sweeps before it serves (leases that ran out while it was down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from lightd.core import holders
from lightd.core.changes import Change, DeleteLease, put_port
from lightd.core.entry import Entry
from lightd.core.leases import Lease, new_lease
from lightd.errors import NotFound
from lightd.metrics import Metrics
from lightd.service.pool_service import Event, PoolService, ports_json

__all__ = ["SWEEP_EVERY", "LeaseService"]

log = logging.getLogger(__name__)

SWEEP_EVERY = 1.0  # the longest the sweeper sleeps


class LeaseNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Lease not found")


class LeaseService:
    def __init__(
        self,
        pools: PoolService,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.pools = pools
        self.clock = clock
        self.metrics = metrics or Metrics.disabled()
        self.leases: dict[str, Lease] = {}
        self.expired = 0
        self._sweeper: asyncio.Task[None] | None = None
        pools.reload_hooks.append(self.load)

    # -- life cycle --------------------------------------------------------------------------

    def load(self) -> None:
        self.leases = {lease.id: lease for lease in self.pools.stored_leases()}

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _sweep_forever(self) -> None:
        while True:
            wait = SWEEP_EVERY
            if self.leases:
                soonest = min(lease.expires_at for lease in self.leases.values())
                wait = min(max(soonest - self.clock(), 0.0), SWEEP_EVERY)
            # No lease made meanwhile can be due sooner: it lasts at least a second from now.
            await asyncio.sleep(wait)
            try:
                await self.expire_due()
            except Exception:  # the next sweep tries again; a failed save rebuilt memory
                log.exception("leases not expired")

    # -- reading -----------------------------------------------------------------------------

    async def all(self) -> list[tuple[Lease, list[Entry]]]:
        await self.expire_due()
        return [(lease, self.pools.leased(lease.id))
                for lease in sorted(self.leases.values(), key=Lease.sort_key)]

    async def get(self, lease_id: str) -> tuple[Lease, list[Entry]]:
        await self.expire_due()
        lease = self._find(lease_id)
        return lease, self.pools.leased(lease.id)

    def exists(self, lease_id: str) -> bool:
        return lease_id in self.leases

    def _find(self, lease_id: str) -> Lease:
        lease = self.leases.get(lease_id)
        if lease is None:
            raise LeaseNotFound()
        return lease

    # -- changing ----------------------------------------------------------------------------

    async def claim(
        self,
        count: int,
        protocols: tuple[str, ...],
        ip: str | None,
        contiguous: bool,
        note: str | None,
        ttl: int,
    ) -> tuple[Lease, list[Entry]]:
        """A claim whose entries a new lease of ``ttl`` seconds holds (saved with them)."""
        lease = new_lease(self.clock(), ttl)
        entries = await self.pools.claim(count, protocols, ip, contiguous, note, lease=lease)
        self.leases[lease.id] = lease
        return lease, entries

    async def renew(self, lease_id: str, ttl: int | None) -> tuple[Lease, list[Entry]]:
        await self.expire_due()
        lease = self._find(lease_id).renewed(self.clock(), ttl)
        self.leases[lease.id] = lease
        entries = self.pools.leased(lease.id)
        await self.pools.save([lease.change()], [("lease.renewed", _told(lease, entries))])
        return lease, entries

    async def release(self, lease_id: str) -> list[Entry]:
        """Free every entry of the lease, and forget it."""
        await self.expire_due()
        await self.pools.unclaimed()
        lease = self._find(lease_id)
        freed = self._end(lease, None)
        await self.pools.save([*map(put_port, freed), DeleteLease(lease.id)],
                              [("lease.released", _told(lease, freed))])
        return freed

    async def keep(self, lease_id: str) -> list[Entry]:
        """Hand every entry of the lease to the operator (in use, no expiry), and forget it."""
        await self.expire_due()
        await self.pools.unclaimed()
        lease = self._find(lease_id)
        kept = self._end(lease, holders.OPERATOR)
        await self.pools.save([*map(put_port, kept), DeleteLease(lease.id)],
                              [("lease.kept", _told(lease, kept))])
        return kept

    async def expire_due(self) -> list[str]:
        """Free the entries of every lease whose expiry has come, in one transaction; return
        the ids of the leases expired."""
        now = self.clock()
        if not any(lease.due(now) for lease in self.leases.values()):
            return []
        await self.pools.unclaimed()
        now = self.clock()
        due = sorted((lease for lease in self.leases.values() if lease.due(now)),
                     key=Lease.sort_key)
        if not due:
            return []
        changes: list[Change] = []
        events: list[Event] = []
        for lease in due:
            freed = self._end(lease, None)
            changes += [*map(put_port, freed), DeleteLease(lease.id)]
            events.append(("lease.expired", _told(lease, freed)))
            log.info("lease %s expired: freed %d ports (%s)", lease.id, len(freed),
                     _labels(freed))
        await self.pools.save(changes, events)
        self.expired += len(due)
        self.metrics.leases_expired(len(due))
        return [lease.id for lease in due]

    def _end(self, lease: Lease, to: holders.Holder | None) -> list[Entry]:
        """Forget ``lease`` in memory and move its entries to ``to`` (None: free)."""
        del self.leases[lease.id]
        holder = holders.lease_holder(lease.id)
        entries = self.pools.leased(lease.id)
        for entry in entries:
            self.pools.hand_over(entry, holder, to)
        return entries

    # -- containers taking leased entries (service.containers) -------------------------------

    def forget_empty(self, lease_ids: Sequence[str]) -> list[Change]:
        """Forget the leases among ``lease_ids`` that hold nothing any more (a container took
        every entry); their deletion, for the caller to save."""
        empty = [i for i in dict.fromkeys(lease_ids) if i in self.leases and not self.pools.leased(i)]
        for lease_id in empty:
            del self.leases[lease_id]
        return [DeleteLease(lease_id) for lease_id in empty]


def _told(lease: Lease, entries: Sequence[Entry]) -> dict[str, object]:
    return {"lease": lease.summary(), "ports": ports_json(entries)}


def _labels(entries: Sequence[Entry], most: int = 10) -> str:
    shown = ", ".join(entry.label() for entry in entries[:most])
    return shown + (f" and {len(entries) - most} more" if len(entries) > most else "")
