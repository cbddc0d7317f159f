"""In-memory fakes that implement the same Protocols as the real adapters."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lightd.core.changes import (
    Change,
    DeleteContainer,
    DeleteLease,
    DeletePort,
    PutContainer,
    PutEvent,
    PutLease,
    PutPort,
    TrimEvents,
)
from lightd.core.containers import Binding
from lightd.core.engine_view import ContainerInfo, missing
from lightd.core.entry import Entry, Key
from lightd.core.leases import Lease
from lightd.errors import StorageError, Unavailable

if TYPE_CHECKING:
    from lightd.service.ports import Engine, Firewall, HostSockets, Store


class MemoryStore:
    """A Store keeping rows in a dict; can be told to fail its next transactions."""

    def __init__(self, entries: Sequence[Entry] = ()) -> None:
        self.rows: dict[Key, tuple[bool, str | None, str | None, str | None]] = {
            e.key: (e.in_use, e.container, e.note, e.lease) for e in entries
        }
        self.containers: dict[str, str] = {}
        self.leases: dict[str, Lease] = {}
        self.events: dict[int, tuple[str, str]] = {}
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

    def load_leases(self) -> list[Lease]:
        return [Lease(**vars(lease)) for lease in self.leases.values()]

    def event_bounds(self) -> tuple[int, int]:
        return (min(self.events, default=0), max(self.events, default=0))

    def read_events(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        ids = sorted(i for i in self.events if i > after)[:limit]
        return [(i, *self.events[i]) for i in ids]

    def apply(self, changes: Sequence[Change]) -> None:
        if self.gate is not None:
            self.gate.wait(timeout=10)
        if self.fail_next:
            self.fail_next -= 1
            raise StorageError("could not save the change: disk I/O error")
        staged = dict(self.rows)
        containers = dict(self.containers)
        leases = dict(self.leases)
        events = dict(self.events)
        for change in changes:
            if isinstance(change, PutLease):
                leases[change.id] = Lease(*change)
            elif isinstance(change, DeleteLease):
                leases.pop(change.id, None)
            elif isinstance(change, PutEvent):
                events[change.id] = (change.type, change.data)
            elif isinstance(change, TrimEvents):
                events = {i: e for i, e in events.items() if i >= change.below}
            if isinstance(change, PutContainer):
                containers[change.internal_id] = change.body
            elif isinstance(change, DeleteContainer):
                containers.pop(change.internal_id, None)
            if isinstance(change, PutPort):
                staged[(change.ip, change.port, change.protocol)] = (
                    change.in_use, change.container, change.note, change.lease)
            elif isinstance(change, DeletePort):
                staged.pop((change.ip, change.port, change.protocol), None)
        self.rows = staged
        self.containers = containers
        self.leases = leases
        self.events = events
        self.transactions.append(list(changes))

    def close(self) -> None:
        pass


class FakeFirewall:
    """A Firewall keeping the set of open entries; can be told to fail.

    ``fail`` fails every open and close; :meth:`fail_next` fails only the next call(s) of one
    method, and ``failed`` lists the calls that failed that way (a test knows what it caused).
    """

    METHODS = ("open", "close", "reconcile")

    def __init__(self) -> None:
        self.open_keys: set[Key] = set()
        self.fail = False
        self.failing: dict[str, int] = {}
        self.failed: list[str] = []
        self.gate: asyncio.Event | None = None  # when set, open() waits for it, like iptables

    def fail_next(self, method: str, times: int = 1) -> None:
        if method not in self.METHODS:
            raise ValueError(f"FakeFirewall has no method {method!r} to fail")
        self.failing[method] = self.failing.get(method, 0) + times

    def _maybe_fail(self, method: str) -> None:
        if self.failing.get(method):
            self.failing[method] -= 1
            self.failed.append(method)
            raise Unavailable(f"iptables-restore failed: test failure of {method}")
        if self.fail and method != "reconcile":
            raise Unavailable("iptables-restore failed: test failure")

    async def open(self, entries: Sequence[Entry]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self._maybe_fail("open")
        self.open_keys.update(e.key for e in entries)

    async def close(self, entries: Sequence[Entry]) -> None:
        self._maybe_fail("close")
        self.open_keys.difference_update(e.key for e in entries)

    async def reconcile(self, entries: Sequence[Entry]) -> dict[str, Any]:
        self._maybe_fail("reconcile")
        self.open_keys = {e.key for e in entries}
        return {"added": 0, "removed": 0}

    def status(self) -> dict[str, Any]:
        return {"enabled": True, "backend": "fake"}


class FakeEngine:
    """An Engine that keeps containers in a dict; can be told to fail.

    ``fail_create`` fails the next create with the given error; :meth:`fail_next` fails a
    later call of any method (before it changes anything, as an engine that refuses does), and
    ``failed`` lists the calls that failed that way.
    """

    kind = "fake"
    METHODS = ("create", "start", "stop", "remove", "rename", "inspect", "list_managed")

    def __init__(self) -> None:
        self.containers: dict[str, ContainerInfo] = {}
        self.fail_create: Exception | None = None
        self.failing: dict[str, list[tuple[int, Exception]]] = {}
        self.failed: list[str] = []
        self.counter = 0
        self.calls: list[str] = []

    def fail_next(self, method: str, error: Exception | None = None, after: int = 0) -> None:
        """Fail a call of ``method`` once ``after`` more calls of it have succeeded."""
        if method not in self.METHODS:
            raise ValueError(f"FakeEngine has no method {method!r} to fail")
        failure = error or Unavailable(f"engine said no to {method} (test failure)")
        self.failing.setdefault(method, []).append((after, failure))

    def _maybe_fail(self, method: str) -> None:
        pending = self.failing.get(method)
        if not pending:
            return
        after, failure = pending[0]
        if after:
            pending[0] = (after - 1, failure)
            return
        pending.pop(0)
        self.failed.append(method)
        raise failure

    def create(
        self,
        name: str,
        image: str,
        command: Sequence[str] | str | None = None,
        env: Mapping[str, str] | None = None,
        bindings: Sequence[Binding] = (),
        start: bool = True,
        *,
        internal_id: str | None = None,
    ) -> str:
        self.calls.append(f"create {name}")
        if self.fail_create is not None:
            error, self.fail_create = self.fail_create, None
            raise error
        self._maybe_fail("create")
        if any(c["name"] == name for c in self.containers.values()):
            raise Unavailable(f"name {name} in use", reason="name_in_use")
        if start:
            self._refuse_published(bindings)
        self.counter += 1
        engine_id = f"id{self.counter}"
        self.containers[engine_id] = ContainerInfo(
            id=engine_id, name=name, internal_id=internal_id or name,
            state="running" if start else "created", running=start, image=image,
            bindings=list(bindings), exit_code=None, error="",
        )
        return engine_id

    def start(self, engine_id: str) -> None:
        self.calls.append(f"start {engine_id}")
        self._maybe_fail("start")
        info = self.containers[engine_id]
        if not info["running"]:
            self._refuse_published(info["bindings"], engine_id)
        info["state"], info["running"] = "running", True

    def _refuse_published(self, bindings: Sequence[Binding], starting: str | None = None) -> None:
        """As a real engine does: a host port another running container publishes cannot be had."""
        taken = {b.key for c in self.containers.values() if c["running"] and c["id"] != starting
                 for b in c["bindings"]}
        busy = [b for b in bindings if b.key in taken]
        if busy:
            raise Unavailable(f"host port {busy[0].host_port} is already bound", reason="port_in_use")

    def stop(self, engine_id: str, timeout: int | None = None) -> None:
        self.calls.append(f"stop {engine_id}")
        self._maybe_fail("stop")
        info = self.containers[engine_id]
        info["state"], info["running"] = "exited", False

    def remove(self, engine_id: str, force: bool = True) -> None:
        self.calls.append(f"remove {engine_id}")
        self._maybe_fail("remove")
        for key, info in list(self.containers.items()):
            if engine_id in (key, info["name"]):
                del self.containers[key]

    def rename(self, engine_id: str, new_name: str) -> None:
        self.calls.append(f"rename {engine_id} {new_name}")
        self._maybe_fail("rename")
        self.containers[engine_id]["name"] = new_name

    def inspect(self, engine_id_or_name: str) -> ContainerInfo:
        self._maybe_fail("inspect")
        for key, info in self.containers.items():
            if engine_id_or_name in (key, info["name"]):
                return _copy(info)
        return missing()

    def list_managed(self) -> list[ContainerInfo]:
        self._maybe_fail("list_managed")
        infos = [_copy(info) for info in self.containers.values()]
        return sorted(infos, key=lambda i: (i["internal_id"] or "", i["name"]))  # as engines do


def _copy(info: ContainerInfo) -> ContainerInfo:
    """What an engine answers is a new object each time: a caller may change it freely."""
    return ContainerInfo(**{**info, "bindings": list(info["bindings"])})


class FakeSocket:
    """A socket of :class:`FakeHost`'s tables, named as the real tables name one."""

    def __init__(self, ip: str, port: int, protocol: str) -> None:
        self.ip, self.port, self.protocol = ip, port, protocol

    def label(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}/{self.protocol} LISTEN uid=0"


class FakeHost:
    """The host's socket tables as a test sets them: ``bound`` holds (ip, port, protocol) keys.

    As Linux does, a wildcard clashes with every address of its family on the same port and
    protocol. ``fail`` makes the next snapshots raise it; ``snapshots`` records what was asked.
    """

    def __init__(self, bound: Sequence[Key] = ()) -> None:
        self.bound: set[Key] = set(bound)
        self.fail: OSError | None = None
        self.snapshots: list[tuple[tuple[str, ...], tuple[int, int] | None, bool]] = []

    def snapshot(
        self,
        protocols: Sequence[str],
        *,
        ports: tuple[int, int] | None = None,
        ignore_time_wait: bool = False,
    ) -> FakeTable:
        self.snapshots.append((tuple(protocols), ports, ignore_time_wait))
        if self.fail is not None:
            raise self.fail
        low, high = ports or (1, 65535)
        return FakeTable({k for k in self.bound if k[2] in protocols and low <= k[1] <= high})


class FakeTable:
    def __init__(self, bound: set[Key]) -> None:
        self.bound = bound

    def holders(self, ip: str, port: int, protocol: str) -> list[FakeSocket]:
        v6 = ":" in ip
        found = []
        for bound_ip, bound_port, bound_protocol in sorted(self.bound):
            if (bound_port, bound_protocol) != (port, protocol) or (":" in bound_ip) != v6:
                continue
            if bound_ip == ip or bound_ip in ("0.0.0.0", "::") or ip in ("0.0.0.0", "::"):
                found.append(FakeSocket(bound_ip, port, protocol))
        return found


if TYPE_CHECKING:  # the fakes satisfy the Protocols the services take: `make lint` runs mypy on this file
    _store: Store = MemoryStore()
    _firewall: Firewall = FakeFirewall()
    _engine: Engine = FakeEngine()
    _host: HostSockets = FakeHost()
