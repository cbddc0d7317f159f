"""What the use cases need from the outside world, as small Protocols.

Adapters satisfy these structurally; the service never imports an adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from lightd.core.changes import Change
from lightd.core.containers import Binding
from lightd.core.engine_view import ContainerInfo
from lightd.core.entry import Entry
from lightd.core.leases import Lease

__all__ = [
    "BoundPorts",
    "Engine",
    "Firewall",
    "Host",
    "HostSockets",
    "NoFirewall",
    "NoReservedPorts",
    "ReservedPorts",
    "SocketHolder",
    "SocketTable",
    "Store",
    "Writer",
]


class Store(Protocol):
    """Durable storage of the pool. Called from one thread at a time."""

    created: bool

    def open(self) -> None: ...

    def load_entries(self) -> list[Entry]: ...

    def load_containers(self) -> list[str]:
        """Every container, as the JSON text it was saved as."""

    def load_leases(self) -> list[Lease]: ...

    def event_bounds(self) -> tuple[int, int]:
        """The ids of the oldest and the newest event kept (0, 0 when none is)."""

    def read_events(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        """Up to ``limit`` events after id ``after``, in order; safe from any thread."""

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply all changes in one transaction, durably, or raise StorageError and apply none."""

    def close(self) -> None: ...


class Writer(Protocol):
    """Carries the store's transactions off the event loop, one after another, in order."""

    async def start(self) -> None: ...

    def write(self, changes: Sequence[Change]) -> asyncio.Future[None]:
        """Apply ``changes`` as one transaction; the future fails with StorageError if not."""

    def abandon(self) -> None:
        """Give up a write that is overdue, so its future settles soon (if the writer can)."""

    async def close(self) -> None:
        """Finish what was written, then stop."""


class Firewall(Protocol):
    """Keeps host firewall rules in step with the pool."""

    async def open(self, entries: Sequence[Entry]) -> None:
        """Open every entry, all or nothing; raise Unavailable on failure."""

    async def close(self, entries: Sequence[Entry]) -> None:
        """Close every entry, all or nothing; raise Unavailable on failure."""

    async def reconcile(self, entries: Sequence[Entry]) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...


class NoFirewall:
    """The firewall when lightd manages none: every call succeeds and changes nothing."""

    def __init__(self, reason: str = "turned off") -> None:
        self.reason = reason

    async def open(self, entries: Sequence[Entry]) -> None:
        return None

    async def close(self, entries: Sequence[Entry]) -> None:
        return None

    async def reconcile(self, entries: Sequence[Entry]) -> dict[str, Any]:
        return {"added": 0, "removed": 0}

    def status(self) -> dict[str, Any]:
        return {"enabled": False, "reason": self.reason}


class ReservedPorts(Protocol):
    """Keeps the pool's port numbers out of the kernel's choice of local ports for outgoing
    connections (lightd.adapters.reserved_ports), keeping what others reserved."""

    # False: apply() changes nothing from now on, so the service need not count numbers for it.
    enabled: bool

    def apply(self, wanted: bytes) -> None:
        """Reserve for the pool exactly the numbers flagged 1 in ``wanted`` (65,536 bytes, one
        per number); raise Unavailable on failure. Fast: it runs on the event loop."""

    def warnings(self, ports: Sequence[int]) -> list[str]:
        """Why adding these numbers to the pool is risky (empty when it is not)."""

    def status(self) -> dict[str, Any]: ...


class NoReservedPorts:
    """The reservation when lightd keeps none, and says nothing about it (the unit tests')."""

    enabled = False

    def __init__(self, reason: str = "turned off") -> None:
        self.reason = reason

    def apply(self, wanted: bytes) -> None:
        return None

    def warnings(self, ports: Sequence[int]) -> list[str]:
        return []

    def status(self) -> dict[str, Any]:
        return {"enabled": False, "reason": self.reason, "count": 0}


class BoundPorts(Protocol):
    """A snapshot of the ports other processes on this host hold."""

    def is_bound(self, ip: str, port: int, protocol: str) -> bool: ...


class Host(Protocol):
    """What lightd asks of the host's network stack."""

    def snapshot(
        self, protocols: Sequence[str], *, ports: tuple[int, int] | None = None
    ) -> BoundPorts:
        """The ports bound right now, for these protocols (and this range, if given)."""

    def is_local_address(self, ip: str) -> bool:
        """Whether some interface carries ``ip``; wildcards and loopback always pass."""


class SocketHolder(Protocol):
    """One socket that holds a port, as a report names it."""

    def label(self) -> str: ...


class SocketTable(Protocol):
    """A snapshot of this host's sockets that can say which of them hold a port."""

    def holders(self, ip: str, port: int, protocol: str) -> Sequence[SocketHolder]:
        """The sockets that clash with an entry ``(ip, port, protocol)``; empty when none do."""


class HostSockets(Protocol):
    """The host's socket tables as the repair loop reads them (lightd.adapters.host is one).

    Blocks (it reads the kernel's tables): call it in a thread.
    """

    def snapshot(
        self,
        protocols: Sequence[str],
        *,
        ports: tuple[int, int] | None = None,
        ignore_time_wait: bool = False,
    ) -> SocketTable: ...


class Engine(Protocol):
    """A container runtime (see lightd.adapters.engine). Its methods block: call them in a thread.

    ``inspect`` reports a container the engine does not have as state ``missing``; an engine
    that cannot be asked raises Unavailable instead.
    """

    kind: str

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
    ) -> str: ...

    def start(self, engine_id: str) -> None: ...

    def stop(self, engine_id: str, timeout: int | None = None) -> None: ...

    def remove(self, engine_id: str, force: bool = True) -> None: ...

    def rename(self, engine_id: str, new_name: str) -> None: ...

    def inspect(self, engine_id_or_name: str) -> ContainerInfo: ...

    def list_managed(self) -> Sequence[ContainerInfo]:
        """Every container carrying lightd's label, sorted by internal_id."""
