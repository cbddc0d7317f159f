"""Skip entries whose port some other process has bound on this host right now.

The pool can only know what it was told; a port bound behind lightd's back (a server started by
hand, a stray process) would make the next container fail to start. Choosing consults a snapshot
of the host's socket tables at most ``max_age`` seconds old (50 ms by default, or 50 times what
the last snapshot took to read, if more: a host with very many sockets). Any such check races a
process binding a moment later; sharing one snapshot among the requests of those 50 ms keeps its
cost (about a millisecond) off every single ``random`` and ``claim`` under load, and an entry
freed on the host is handed out again once the snapshot ages.
"""

from __future__ import annotations

import logging
import time

from lightd.core.entry import PROTOCOLS, Entry, Key
from lightd.service.ports import BoundPorts, Host

__all__ = ["HostCheck"]

log = logging.getLogger(__name__)

REPORTED_LIMIT = 10_000


class HostCheck:
    def __init__(self, host: Host | None, max_age: float = 0.05) -> None:
        self.host = host
        self.max_age = max_age
        self._reject: _Reject | None = None
        self._reported: set[Key] = set()
        self._taken_at = 0.0
        self._max_age = max_age

    @property
    def enabled(self) -> bool:
        return self.host is not None

    def reject(self) -> _Reject | None:
        """A predicate refusing entries bound on the host, per a snapshot at most max_age old."""
        if self.host is None:
            return None
        now = time.monotonic()
        if self._reject is None or now - self._taken_at > self._max_age:
            try:
                snapshot = self.host.snapshot(PROTOCOLS)
            except OSError as exc:
                log.warning("cannot read this host's socket tables, not checking: %s", exc)
                return None
            took = time.monotonic() - now
            # On a host with very many sockets a snapshot costs more: keep it under ~2% of time.
            self._max_age = max(self.max_age, 50 * took)
            self._taken_at = now
            self._reject = _Reject(snapshot, self._reported)
        return self._reject


class _Reject:
    __slots__ = ("reported", "snapshot")

    def __init__(self, snapshot: BoundPorts, reported: set[Key]) -> None:
        self.snapshot = snapshot
        self.reported = reported

    def __call__(self, entry: Entry) -> bool:
        if not self.snapshot.is_bound(entry.ip, entry.port, entry.protocol):
            return False
        # Said once per entry (until many were said), not on every draw: a busy host has
        # thousands of ephemeral ports bound, and logging each draw would cost more than it.
        if entry.key not in self.reported:
            if len(self.reported) >= REPORTED_LIMIT:
                self.reported.clear()
            self.reported.add(entry.key)
            log.info("skipping %s: another process on this host has it bound", entry.label())
        return True
