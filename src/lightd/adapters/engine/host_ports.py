"""Which host ports of a container some other socket of this host holds, asked before a start.

The engine reads the host through the narrow :class:`HostTable` (the module
:mod:`lightd.adapters.host` is one), so tests can hand it a table of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

from lightd.adapters import host as host_sockets
from lightd.core.containers import Binding

__all__ = ["BoundTable", "HostTable", "check_host_ports"]

log = logging.getLogger(__name__)


class BoundTable(Protocol):
    """A snapshot of the sockets of this host."""

    def is_bound(self, ip: str, port: int, protocol: str) -> bool: ...


class HostTable(Protocol):
    """What the engine asks of the host: its socket tables, for some protocols and ports."""

    def snapshot(
        self, protocols: Sequence[str], *, ports: tuple[int, int] | None, ignore_time_wait: bool
    ) -> BoundTable: ...


def check_host_ports(bindings: Iterable[Binding], host: HostTable | None = None) -> list[Binding]:
    """Return the bindings whose host port some socket of this host holds right now.

    Reads the kernel's socket tables through ``host`` (by default :mod:`lightd.adapters.host`;
    nothing is bound, so the check never races a real server for the port). If the tables
    cannot be read at all, nothing is reported busy and the engine's own bind decides.
    """
    wanted = list(bindings)
    if not wanted:
        return []
    table: HostTable = host_sockets if host is None else host
    ports = [b.host_port for b in wanted]
    try:
        # Only the sockets on these ports' range: a busy host has tens of thousands of others.
        # TIME_WAIT aside: the engine's port holder binds with SO_REUSEADDR, which the TIME_WAIT
        # of its own last listener does not stop; counting them refused a start for up to a
        # minute after a stop on Docker Engine, whose userland proxy closes connections first.
        index = table.snapshot(
            sorted({b.protocol for b in wanted}), ports=(min(ports), max(ports)), ignore_time_wait=True
        )
    except OSError as exc:
        log.warning("cannot read this host's socket tables (%s); not checking host ports", exc)
        return []
    return [b for b in wanted if index.is_bound(b.host_ip, b.host_port, b.protocol)]
