"""Published ports between lightd and the engine: checked on the way in, parsed on the way back.

lightd speaks :class:`~lightd.core.containers.Binding`; the Docker Engine API speaks
``{"8080/tcp": [{"HostIp": "", "HostPort": "26001"}]}``. This module turns one into the other,
and decides in :func:`engine_host_ip` which ``HostIp`` the engine is sent.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from lightd.core.containers import Binding
from lightd.core.entry import PROTOCOLS
from lightd.errors import InvalidInput

__all__ = [
    "canonical_host_ip",
    "check_bindings",
    "describe",
    "engine_host_ip",
    "exposed_ports",
    "parse_port_bindings",
    "port_bindings",
]


def canonical_host_ip(value: str) -> str:
    """A ``HostIp`` as the engine reports it, in lightd's form: ``""`` is ``0.0.0.0``."""
    if value in ("", "0.0.0.0"):
        return "0.0.0.0"
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        return value


def engine_host_ip(ip: str, *, podman: bool) -> str:
    """The ``HostIp`` to send the engine for a binding on ``ip``: the one place that decides it.

    The pool's ``0.0.0.0`` means every IPv4 address and nothing else; each engine needs its own
    word for that:

    - Podman 4.3 (netavark) turns ``"0.0.0.0"`` into the DNAT rule ``-d 0.0.0.0/32``, which no
      packet matches: the published port accepts connections and never answers. ``""`` (what
      the docker CLI sends for ``-p 25565:25565``) gives a rule without ``-d``, on IPv4 only.
    - Docker Engine reads ``""`` as IPv4 *and* IPv6, so the container would also hold ``[::]``
      on that port, which the pool may give to another container as the ``::`` entry; it takes
      ``"0.0.0.0"`` as IPv4 only.

    Both are read back as ``0.0.0.0`` (see :func:`canonical_host_ip`). Every other ip, ``::``
    included, is sent as it is.
    """
    if ip == "0.0.0.0":
        return "" if podman else "0.0.0.0"
    return ip


def check_bindings(bindings: Sequence[Binding]) -> list[Binding]:
    """The bindings with canonical ips; InvalidInput for a bad one or a host port bound twice."""
    seen: set[tuple[str, int, str]] = set()
    out: list[Binding] = []
    for b in bindings:
        if not isinstance(b, Binding):
            raise InvalidInput(f"a binding must be a Binding, not {type(b).__name__}")
        if b.protocol not in PROTOCOLS:
            raise InvalidInput(f"protocol must be tcp or udp (got {b.protocol!r})")
        for field, port in (("host_port", b.host_port), ("container_port", b.container_port)):
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise InvalidInput(f"{field} must be an integer from 1 to 65535 (got {port!r})")
        try:
            ip = str(ipaddress.ip_address(b.host_ip))
        except ValueError:
            raise InvalidInput(f"host_ip is not a valid IP address: {b.host_ip!r}") from None
        key = (ip, b.host_port, b.protocol)
        if key in seen:
            raise InvalidInput(f"the host port {ip}:{b.host_port}/{b.protocol} is bound twice")
        seen.add(key)
        out.append(Binding(ip, b.host_port, b.protocol, b.container_port))
    return out


def port_bindings(bindings: Sequence[Binding], *, podman: bool) -> dict[str, list[tuple[str, int]]]:
    """Checked bindings as the SDK's ``create_host_config(port_bindings=...)`` takes them."""
    out: dict[str, list[tuple[str, int]]] = {}
    for b in bindings:
        out.setdefault(b.port_key, []).append((engine_host_ip(b.host_ip, podman=podman), b.host_port))
    return out


def exposed_ports(bindings: Sequence[Binding]) -> list[tuple[int, str]]:
    """The container side of the bindings, as ``create_container(ports=...)`` takes it."""
    return sorted({(b.container_port, b.protocol) for b in bindings})


def parse_port_bindings(value: Any) -> list[Binding]:
    """Parse ``HostConfig.PortBindings`` (or ``NetworkSettings.Ports``), sorted.

    Whatever the engine sends is read without raising: a key that is not ``<port>[/<proto>]``,
    hosts that are not a list and a host that is not an object are skipped, a missing or bad
    ``HostPort`` reads as 0 (an engine picked the port, or lightd cannot tell which).
    """
    out: list[Binding] = []
    if not isinstance(value, dict):
        return out
    for key, hosts in value.items():
        port_text, _, proto = str(key).partition("/")
        try:
            container_port = int(port_text)
        except ValueError:
            continue
        if not isinstance(hosts, list | tuple):
            continue  # None: the port is exposed but not published
        for host in hosts:
            if not isinstance(host, dict):
                continue
            try:
                host_port = int(host.get("HostPort") or 0)
            except (TypeError, ValueError):
                host_port = 0
            ip = canonical_host_ip(str(host.get("HostIp") or ""))
            out.append(Binding(ip, host_port, proto or "tcp", container_port))
    return sorted(out)


def describe(bindings: Sequence[Binding]) -> str:
    """``127.0.0.1:26001/tcp, 0.0.0.0:19132/udp`` for a message."""
    return ", ".join(f"{b.host_ip}:{b.host_port}/{b.protocol}" for b in bindings)
