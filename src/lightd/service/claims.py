"""Claims too big to decide in one go: taken in slices, and atomic all the same.

Marking an entry costs a few microseconds, so a claim of 40,000 entries would hold the event loop
for a fifth of a second, and every other request (``ping`` too) would wait that long. A claim that
is not done after ``SLICE_SECONDS`` of work yields to the loop and goes on in the next slice.

Atomic all the same: from its first yield until its transaction is durable the claim holds the
:class:`Gate`, and everything else that reads or changes the pool (reads, use, delete, other
claims) waits for it, as readers already wait for pending commits. What it has taken is marked in
use at once, so nothing that does not wait (a container taking a named port) can be handed it;
and a claim that fails gives back everything it took before it lets anyone in. The loop meanwhile
keeps serving everything that does not touch the pool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from lightd.core import holders
from lightd.core.changes import Change, put_port
from lightd.core.choose import Picker, Restart
from lightd.core.entry import Entry
from lightd.core.pool import Pool
from lightd.errors import NoAvailablePorts, StorageError

__all__ = ["SLICE_SECONDS", "Gate", "SlicedClaim"]

# Work done between two yields to the loop; well under the ~20 ms a request may be held up.
SLICE_SECONDS = 0.005
# Draws per step of the picker; the clock is read once per step.
STEP_DRAWS = 64


class Gate:
    """Held by the one claim that is being taken in slices; the pool's other users wait."""

    def __init__(self) -> None:
        self._held: asyncio.Future[None] | None = None

    @property
    def held(self) -> bool:
        return self._held is not None

    async def wait(self) -> None:
        """Return once no sliced claim holds the pool (a waiter's cancellation leaves it be)."""
        while self._held is not None:
            await asyncio.shield(self._held)

    def hold(self) -> None:
        assert self._held is None, "two sliced claims at once"
        self._held = asyncio.get_running_loop().create_future()

    def open(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.set_result(None)


class SlicedClaim:
    """Takes what ``picker`` chooses for ``holder``, slice by slice; see the module docstring.

    The caller waits for the gate before it starts, saves the changes :meth:`take` returns, and
    then calls :meth:`finish` however the save ends.
    """

    def __init__(
        self,
        current_pool: Callable[[], Pool],
        gate: Gate,
        picker: Picker,
        holder: holders.Holder,
        note: str | None = None,
    ) -> None:
        self.current_pool = current_pool
        self.pool = picker.pool
        self.gate = gate
        self.picker = picker
        self.holder = holder
        self.note = note
        self.taken: list[Entry] = []
        self._notes: list[str | None] = []  # the notes the taken entries had, when note is set
        self._holding = False

    async def take(self) -> tuple[list[Entry], list[Change]]:
        """Every entry of the claim, taken in memory, and their changes; or raise
        NoAvailablePorts (StorageError if the pool was reloaded meanwhile) with nothing taken."""
        changes: list[Change] = []
        try:
            deadline = time.perf_counter() + SLICE_SECONDS
            while self.picker.wanted:
                try:
                    items = self.picker.step(STEP_DRAWS)
                except Restart:
                    if not await self._give_back():
                        raise self._reloaded() from None
                    changes = []
                    continue
                if items is None:
                    raise NoAvailablePorts()
                for item in items:
                    for entry in item:
                        self._take(entry)
                        changes.append(put_port(entry))
                if self.picker.wanted and time.perf_counter() > deadline:
                    await self._pause()
                    if self.current_pool() is not self.pool:
                        raise self._reloaded()
                    deadline = time.perf_counter() + SLICE_SECONDS
        except BaseException as exc:
            try:
                await self._give_back(at_once=isinstance(exc, asyncio.CancelledError))
            finally:
                self.finish()
            raise
        return self.taken, changes

    def finish(self) -> None:
        """Let the pool's other users in again (after the save, however it ended)."""
        if self._holding:
            self._holding = False
            self.gate.open()

    def _take(self, entry: Entry) -> None:
        holders.take(self.pool, entry, self.holder)  # available, so never refused
        if self.note is not None:
            self._notes.append(entry.note)
            self.pool.set_note(entry, self.note)
        self.taken.append(entry)

    async def _pause(self) -> None:
        """Let the loop run other tasks; from the first pause on, this claim holds the gate."""
        if not self._holding:
            self.gate.hold()
            self._holding = True
        await asyncio.sleep(0)

    @staticmethod
    def _reloaded() -> StorageError:
        # A failed commit rebuilt the pool from the store: what was taken went with the old pool,
        # and nothing of this claim was saved.
        return StorageError("the pool was reloaded from the store during the claim; nothing was claimed")

    async def _give_back(self, at_once: bool = False) -> bool:
        """Free everything taken (in slices too, unless ``at_once``); False when the pool was
        reloaded meanwhile, so there was nothing left to free.

        A cancellation while giving back finishes the job without pausing again, then goes on:
        nothing may stay taken.
        """
        taken, notes = self.taken, self._notes
        self.taken, self._notes = [], []
        cancelled: BaseException | None = None
        deadline = time.perf_counter() + SLICE_SECONDS
        for index, entry in enumerate(taken):
            if self.current_pool() is not self.pool:
                return False
            holders.release(self.pool, entry, self.holder)
            if notes:
                self.pool.set_note(entry, notes[index])
            if not at_once and index % STEP_DRAWS == 0 and time.perf_counter() > deadline:
                try:
                    await self._pause()
                except asyncio.CancelledError as exc:
                    cancelled, at_once = exc, True
                deadline = time.perf_counter() + SLICE_SECONDS
        if cancelled is not None:
            raise cancelled
        return self.current_pool() is self.pool
