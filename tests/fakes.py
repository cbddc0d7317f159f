"""In-memory fakes that implement the same Protocols as the real adapters."""

from __future__ import annotations

from collections.abc import Sequence

from lightd.core.changes import Change, DeleteContainer, DeletePort, PutContainer, PutPort
from lightd.core.entry import Entry, Key
from lightd.errors import StorageError, Unavailable


class MemoryStore:
    """A Store keeping rows in a dict; can be told to fail its next transactions."""

    def __init__(self, entries: Sequence[Entry] = ()) -> None:
        self.rows: dict[Key, tuple[bool, str | None, str | None]] = {
            e.key: (e.in_use, e.container, e.note) for e in entries
        }
        self.containers: dict[str, str] = {}
        self.created = True
        self.fail_next = 0
        self.transactions: list[list[Change]] = []

    def open(self) -> None:
        pass

    def load_entries(self) -> list[Entry]:
        return [Entry(ip, port, proto, *row) for (ip, port, proto), row in self.rows.items()]

    def load_containers(self) -> list[str]:
        return list(self.containers.values())

    def apply(self, changes: Sequence[Change]) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise StorageError("could not save the change: disk I/O error")
        staged = dict(self.rows)
        containers = dict(self.containers)
        for change in changes:
            if isinstance(change, PutContainer):
                containers[change.internal_id] = change.body
            elif isinstance(change, DeleteContainer):
                containers.pop(change.internal_id, None)
            if isinstance(change, PutPort):
                staged[(change.ip, change.port, change.protocol)] = (
                    change.in_use, change.container, change.note)
            elif isinstance(change, DeletePort):
                staged.pop(tuple(change), None)
        self.rows = staged
        self.containers = containers
        self.transactions.append(list(changes))

    def close(self) -> None:
        pass


class FakeFirewall:
    """A Firewall keeping the set of open entries; can be told to fail."""

    def __init__(self) -> None:
        self.open_keys: set[Key] = set()
        self.fail = False

    async def open(self, entries: Sequence[Entry]) -> None:
        if self.fail:
            raise Unavailable("iptables-restore failed: test failure")
        self.open_keys.update(e.key for e in entries)

    async def close(self, entries: Sequence[Entry]) -> None:
        if self.fail:
            raise Unavailable("iptables-restore failed: test failure")
        self.open_keys.difference_update(e.key for e in entries)

    async def reconcile(self, entries: Sequence[Entry]) -> dict[str, object]:
        self.open_keys = {e.key for e in entries}
        return {"added": 0, "removed": 0}

    def status(self) -> dict[str, object]:
        return {"enabled": True, "backend": "fake"}
