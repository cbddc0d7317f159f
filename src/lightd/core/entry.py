"""A pool entry and the parsing rules for its fields.

An entry is identified by ``(ip, port, protocol)``. The ip is kept in the canonical text form of the
``ipaddress`` module, so ``::0`` and ``::`` name the same entry.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

from lightd.errors import InvalidInput, quoted

__all__ = [
    "PROTOCOLS",
    "Entry",
    "Key",
    "canonical_ip",
    "entry_json",
    "is_wildcard",
    "parse_in_use",
    "parse_bounded",
    "parse_ip",
    "parse_port",
    "parse_port_text",
    "parse_protocol",
]

Key = tuple[str, int, str]
PROTOCOLS = ("tcp", "udp")
WILDCARDS = {4: "0.0.0.0", 6: "::"}


# The longest text of an address: ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255.
_IP_TEXT_MAX = 45
PORT_TEXT_RULE = "ASCII digits, no sign, spaces or leading zeros"


def parse_ip(value: Any, field: str = "ip") -> str:
    """Return the canonical text of an IPv4 or IPv6 address, or raise InvalidInput.

    Exactly the address: no surrounding spaces, no zone, no IPv4-mapped IPv6 form (the kernel
    treats ``::ffff:a.b.c.d`` as the IPv4 address, so as an entry of its own it would dodge every
    conflict with the IPv4 entries).
    """
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string holding an IPv4 or IPv6 address")
    if "%" in value:
        raise InvalidInput(f"{field} must not carry an IPv6 zone (got {quoted(value)})")
    if any(char.isspace() for char in value[: _IP_TEXT_MAX + 1]):
        raise InvalidInput(f"{field} must not contain spaces (got {quoted(value)})")
    try:
        if len(value) > _IP_TEXT_MAX or not value.isascii():
            raise ValueError(value)
        address = ipaddress.ip_address(value)
    except ValueError:
        raise InvalidInput(
            f"{field} is not a valid IPv4 or IPv6 address: {quoted(value)}"
        ) from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        raise InvalidInput(
            f"{field} {quoted(value)} is an IPv4-mapped IPv6 address: "
            f"use its IPv4 form {address.ipv4_mapped}"
        )
    return str(address)


def canonical_ip(value: str) -> str:
    """Canonical form of an address already known to be valid."""
    return str(ipaddress.ip_address(value))


def parse_port(value: Any, field: str = "port") -> int:
    """Accept a JSON integer 1..65535; not a string, not a bool, not a float."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field} must be an integer from 1 to 65535")
    if not 1 <= value <= 65535:
        raise InvalidInput(f"{field} must be an integer from 1 to 65535 (got {quoted(value)})")
    return value


def parse_bounded(value: Any, field: str, low: int, high: int) -> int:
    """A whole number written as text in ``low..high`` (a path, a query, a range), or InvalidInput.

    One rule for every number that comes as text: ``0`` or ASCII digits without a leading zero,
    so ``+25565``, `` 25565``, ``025565``, ``２５５６５`` and ``٢٥٥٦٥`` are refused alike. The
    length is checked before ``int()``: converting thousands of digits is slow, and past 4300
    Python refuses with an error of its own.
    """
    if (
        isinstance(value, str)
        and 0 < len(value) <= len(str(high))
        and value.isascii()
        and value.isdigit()
        and (value == "0" or value[0] != "0")
        and low <= int(value) <= high
    ):
        return int(value)
    raise InvalidInput(
        f"{field} must be an integer from {low} to {high} in {PORT_TEXT_RULE} "
        f"(got {quoted(value)})"
    )


def parse_port_text(value: Any, field: str = "port") -> int:
    """A port written as text (a URL path, one end of a range): see :func:`parse_bounded`."""
    return parse_bounded(value, field, 1, 65535)


def parse_protocol(value: Any, field: str = "protocol") -> str:
    """``tcp`` or ``udp``, any case on input, lowercase out; nothing around it."""
    if isinstance(value, str) and len(value) == 3 and value.isascii():
        lowered = value.lower()
        if lowered in PROTOCOLS:
            return lowered
    raise InvalidInput(f"{field} must be \"tcp\" or \"udp\" (got {quoted(value)})")


def parse_in_use(value: Any, field: str = "in_use") -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{field} must be true or false")
    return value


@functools.lru_cache(maxsize=4096)  # few distinct ips, many entries each
def _ip_number(ip: str) -> int:
    return int(ipaddress.ip_address(ip))


def family_of(ip: str) -> int:
    return 6 if ":" in ip else 4


def is_wildcard(ip: str) -> bool:
    return ip in ("0.0.0.0", "::")


class Entry:
    """One (ip, port, protocol) of the pool and who holds it.

    ``container`` names the container that holds the port (its ``internal_id``), ``lease`` the
    lease that does (its id); a port in use with neither is held by the operator (a client marked
    it by hand, or claimed it without a ttl).
    """

    __slots__ = (
        "container", "family", "in_use", "ip", "key", "lease", "note", "port", "protocol", "wildcard"
    )

    def __init__(
        self,
        ip: str,
        port: int,
        protocol: str,
        in_use: bool = False,
        container: str | None = None,
        note: str | None = None,
        lease: str | None = None,
    ) -> None:
        self.ip = ip
        self.port = port
        self.protocol = protocol
        self.in_use = in_use
        self.container = container
        self.note = note
        self.lease = lease
        self.family = family_of(ip)
        self.wildcard = is_wildcard(ip)
        # ip, port and protocol never change: the key is computed once, used on every lookup.
        self.key: Key = (ip, port, protocol)

    @property
    def slot(self) -> tuple[int, int, str]:
        """Entries of one slot compete for the same kernel binding when one is a wildcard."""
        return (self.family, self.port, self.protocol)

    def sort_key(self) -> tuple[int, int, int, str]:
        return (self.family, _ip_number(self.ip), self.port, self.protocol)

    def label(self) -> str:
        host = f"[{self.ip}]" if self.family == 6 else self.ip
        return f"{host}:{self.port}/{self.protocol}"

    def copy(self) -> Entry:
        return Entry(
            self.ip, self.port, self.protocol, self.in_use, self.container, self.note, self.lease
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return (self.key, self.in_use, self.container, self.note, self.lease) == (
            other.key,
            other.in_use,
            other.container,
            other.note,
            other.lease,
        )

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        holder = self.container or self.lease
        held = f" held by {holder}" if holder else ""
        return f"Entry({self.label()} in_use={self.in_use}{held})"


def wildcard_of(family: int) -> str:
    return WILDCARDS[family]


def entry_json(entry: Entry) -> dict[str, Any]:
    """An entry as every answer and event shows it: the seed's keys, then who holds it and its
    note (``lease`` is the id of the lease that holds it)."""
    return {
        "ip": entry.ip,
        "port": entry.port,
        "protocol": entry.protocol,
        "in_use": entry.in_use,
        "container": entry.container,
        "lease": entry.lease,
        "note": entry.note,
    }
