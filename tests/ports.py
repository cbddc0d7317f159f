"""Ports for tests that a busy host cannot take away between the probe and the use.

``bind(("127.0.0.1", 0))`` picks from the kernel's ephemeral range (``ip_local_port_range``), the
same range every outgoing connection takes its local port from. On a host with thousands of
connections opening, a port so picked and released can be taken by one of them before the test
binds or publishes it. Ports outside that range are only ever held by a program that asks for
that port on purpose, so a port found free there stays free.
"""

from __future__ import annotations

import random
import socket

__all__ = ["ephemeral_range", "quiet_port"]

# Ports this process has handed out: two callers in a row never get the same one.
_given: set[int] = set()
# Clear of the seed's 25565-25569 (the default pool) and of the low, well-known ports.
_FIRST, _LAST = 20000, 30999


def ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as text:
            low, high = (int(part) for part in text.read().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def _free(port: int, protocol: str, ip: str) -> bool:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as sock:
        try:
            sock.bind((ip, port))
            if protocol == "tcp":
                sock.listen()
        except OSError:
            return False
    return True


def quiet_port(protocol: str = "tcp", ip: str = "127.0.0.1") -> int:
    """A port outside ``ip_local_port_range`` that nothing holds now, on tcp and udp alike."""
    low, high = ephemeral_range()
    candidates = [p for p in range(_FIRST, _LAST + 1)
                  if not low <= p <= high and not 25565 <= p <= 25569 and p not in _given]
    if not candidates:  # pragma: no cover - a host whose ephemeral range covers all of these
        raise RuntimeError(f"no port outside ip_local_port_range {low}-{high} to test with")
    start = random.randrange(len(candidates))  # spread concurrent test processes apart
    for port in candidates[start:] + candidates[:start]:
        if _free(port, "tcp", ip) and _free(port, "udp", ip):
            _given.add(port)
            return port
    raise RuntimeError("every test port is held by something on this host")  # pragma: no cover
