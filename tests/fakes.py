"""In-memory fakes that implement the same Protocols as the real adapters."""

from __future__ import annotations

import asyncio
import threading
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
        self.gate: threading.Event | None = None  # when set, apply() waits for it (a slow disk)

    def open(self) -> None:
        pass

    def load_entries(self) -> list[Entry]:
        return [Entry(ip, port, proto, *row) for (ip, port, proto), row in self.rows.items()]

    def load_containers(self) -> list[str]:
        return list(self.containers.values())

    def apply(self, changes: Sequence[Change]) -> None:
        if self.gate is not None:
            self.gate.wait(timeout=10)
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
        self.gate: asyncio.Event | None = None  # when set, open() waits for it, like iptables

    async def open(self, entries: Sequence[Entry]) -> None:
        if self.gate is not None:
            await self.gate.wait()
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


class FakeEngine:
    """An Engine that keeps containers in a dict; can be told to fail its next create."""

    kind = "fake"

    def __init__(self) -> None:
        self.containers: dict[str, dict[str, object]] = {}
        self.fail_create: Exception | None = None
        self.counter = 0
        self.calls: list[str] = []

    def create(self, name, image, command=None, env=None, bindings=(), start=True, *, internal_id=None):
        self.calls.append(f"create {name}")
        if self.fail_create is not None:
            error, self.fail_create = self.fail_create, None
            raise error
        if any(c["name"] == name for c in self.containers.values()):
            raise Unavailable(f"name {name} in use", reason="name_in_use")
        self.counter += 1
        engine_id = f"id{self.counter}"
        self.containers[engine_id] = {
            "id": engine_id, "name": name, "internal_id": internal_id or name,
            "state": "running" if start else "created", "bindings": list(bindings),
        }
        return engine_id

    def start(self, engine_id):
        self.calls.append(f"start {engine_id}")
        self.containers[engine_id]["state"] = "running"

    def stop(self, engine_id, timeout=None):
        self.calls.append(f"stop {engine_id}")
        self.containers[engine_id]["state"] = "exited"

    def remove(self, engine_id, force=True):
        self.calls.append(f"remove {engine_id}")
        for key, info in list(self.containers.items()):
            if engine_id in (key, info["name"]):
                del self.containers[key]

    def rename(self, engine_id, new_name):
        self.calls.append(f"rename {engine_id} {new_name}")
        self.containers[engine_id]["name"] = new_name

    def inspect(self, engine_id_or_name):
        for key, info in self.containers.items():
            if engine_id_or_name in (key, info["name"]):
                return dict(info)
        return {"id": "", "name": "", "state": "missing", "bindings": []}

    def list_managed(self):
        return [dict(info) for info in self.containers.values()]
