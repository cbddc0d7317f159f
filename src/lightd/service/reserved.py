"""Which port numbers the pool has, kept beside it, for the kernel's reserved ports.

The kernel reserves numbers, not entries: ``0.0.0.0:27015/udp`` and ``10.0.0.5:27015/tcp`` are
one reservation, which stays until the last entry of the number goes. So the service counts the
entries of each number in step with the in-memory pool (every add and remove of an entry, and a
recount whenever the pool is rebuilt from the store), and after each durable change hands the
kernel adapter the numbers whose count is above zero. Counting in step with the pool itself,
rather than after each commit, means a rebuild can never count an entry twice.

The adapter is told after the commit, not before: a crash in between leaves the store right and
the kernel's list one change behind, which the next start repairs. A failure to write the list
fails nothing: the port works without it; the error is logged and in the status, and the next
change writes the whole list again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from lightd.core.entry import Entry
from lightd.errors import LightdError
from lightd.service.ports import NoReservedPorts, ReservedPorts

__all__ = ["ReservedNumbers"]

log = logging.getLogger(__name__)

PORTS = 65536


class ReservedNumbers:
    def __init__(self, kernel: ReservedPorts | None = None) -> None:
        self.kernel: ReservedPorts = kernel or NoReservedPorts()
        self._counts = [0] * PORTS
        self._flags = bytearray(PORTS)  # 1 where the count is above zero
        self._dirty = False

    def reset(self, entries: Iterable[Entry]) -> None:
        """Count the pool afresh (it was rebuilt from the store) and tell the kernel."""
        counts = [0] * PORTS
        if self.kernel.enabled:
            for entry in entries:
                counts[entry.port] += 1
        self._counts = counts
        self._flags = bytearray(count > 0 for count in counts)
        self._dirty = True
        self.sync()  # also when turned off: the adapter may have a previous run's to take back

    def added(self, entries: Iterable[Entry]) -> None:
        if not self.kernel.enabled:
            return
        counts, flags = self._counts, self._flags
        for entry in entries:
            port = entry.port
            counts[port] += 1
            if not flags[port]:
                flags[port] = 1
                self._dirty = True

    def removed(self, entries: Iterable[Entry]) -> None:
        if not self.kernel.enabled:
            return
        counts, flags = self._counts, self._flags
        for entry in entries:
            port = entry.port
            counts[port] -= 1
            if counts[port] <= 0 and flags[port]:
                flags[port] = 0
                self._dirty = True

    def sync(self) -> None:
        """Hand the kernel the numbers the pool has, if they changed since it last took them.

        Many changes of one transaction end here one after another: the first writes, the others
        find nothing to do. A failed write stays due and is tried again by the next call.
        """
        if not self._dirty:
            return
        try:
            self.kernel.apply(bytes(self._flags))
        except LightdError as exc:
            log.error("reserved ports out of step with the pool until the next change: %s", exc.message)
            return
        self._dirty = False

    def resync(self) -> None:
        """Write the list again even if the pool did not change: it puts back numbers another
        program dropped from it (cheap when nothing did: one read of the list). For a periodic
        caller such as the repair loop."""
        self._dirty = True
        self.sync()

    def warnings(self, ports: Sequence[int]) -> list[str]:
        return self.kernel.warnings(ports)

    def status(self) -> dict[str, Any]:
        return self.kernel.status()
