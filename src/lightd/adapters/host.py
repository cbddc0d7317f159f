"""What this host's network stack says right now: which ports are taken, which addresses it has.

Standard library only, Linux only, and read-only: nothing here binds a port. Everything reads the
network namespace of the calling thread, so it works the same inside a container or ``ip netns``.

Is a port bound?
    The kernel's socket tables are the source of truth, read through ``sock_diag`` netlink (what
    ``ss`` uses) and, where that is refused, ``/proc/net/{tcp,tcp6,udp,udp6}``. A probe that binds
    the port instead would race real servers (for an instant *it* holds the port, and a server
    starting then fails) and its answer depends on the SO_REUSEADDR of both sides: with it on
    both, Linux lets a UDP socket bind over a clashing one, and a TCP socket bind next to one that
    has not listened yet (Docker's probes learned this: moby#50054, moby#50669).

    Which sockets count. The rule is "better to leak a port than hand it out twice", checked
    against what Linux actually refuses (tests/integration/test_host_checks.py):

    * TCP: a socket in *any* state holding the port number counts. A LISTEN socket refuses every
      other bind; a socket bound but not listening refuses every bind that does not set
      SO_REUSEADDR (and its owner will usually listen a moment later); an established connection,
      or its TIME_WAIT, made by a socket without SO_REUSEADDR refuses even a SO_REUSEADDR bind and
      listen (Docker's way). The diag tables do not show SO_REUSEADDR, so all of them count.
      Bound-but-not-listening sockets are listed by ``sock_diag`` since Linux 6.8 ("tcp: Dump
      bound-only sockets in inet_diag"); the ``/proc`` fallback and older kernels cannot see them.
    * UDP: every socket holding the port number, bound or connected.

    Which addresses clash, for one protocol and port number (Linux rules, SO_REUSEPORT aside):

    * the same address, or a wildcard against anything of its family: ``0.0.0.0`` clashes with
      ``127.0.0.1``; ``127.0.0.1`` does not clash with ``127.0.0.2``;
    * a ``[::]`` socket without IPV6_V6ONLY (the Linux default) also holds the IPv4 port on every
      IPv4 address; with IPV6_V6ONLY it holds only IPv6. ``sock_diag`` reports the flag; the
      ``/proc`` tables do not, so that fallback takes every ``[::]`` socket as dual-stack;
    * an IPv6 socket bound to an IPv4-mapped address (``::ffff:a.b.c.d``) is an IPv4 holder of
      ``a.b.c.d``, and an entry whose ip is IPv4-mapped is checked as that IPv4 address;
    * an IPv6 entry is checked against IPv6 holders only, because lightd keeps IPv4 and IPv6 as
      separate entries (``Entry.slot``) and Docker binds IPv6 host ports with IPV6_V6ONLY. Pass
      ``dual_stack=True`` for a consumer that binds ``[::]`` without IPV6_V6ONLY: ``::`` then also
      needs the IPv4 port free on every IPv4 address.

    Only this network namespace is visible: a port published by Docker with the userland proxy
    off exists only as NAT rules, and a process in another namespace holds nothing here.

Which addresses does this host have?
    ``RTM_GETADDR`` over rtnetlink (what ``ip addr`` uses); where that is refused,
    ``/proc/net/if_inet6`` for IPv6 and the SIOCGIFCONF ioctl for IPv4. No external command.
"""

from __future__ import annotations

import array
import errno
import fcntl
import functools
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from typing import NamedTuple

__all__ = [
    "BoundIndex",
    "Holder",
    "is_bound",
    "is_local_address",
    "local_addresses",
    "snapshot",
]

PROTOCOLS = ("tcp", "udp")
_IPPROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
_WILDCARD = {4: bytes(4), 6: bytes(16)}
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}

_TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "BOUND",  # TCP_CLOSE with a port: bound, not listening, not connected
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "SYN_RECV",
}
_UDP_STATES = {1: "CONNECTED", 7: "BOUND"}

# Netlink framing (linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h, linux/rtnetlink.h).
_NETLINK_ROUTE = 0
_NETLINK_SOCK_DIAG = 4
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_SOCK_DIAG_BY_FAMILY = 20
_RTM_NEWADDR = 20
_RTM_GETADDR = 22
_INET_DIAG_SKV6ONLY = 11
_INET_DIAG_REQ_BYTECODE = 1
_INET_DIAG_BC_S_GE = 2
_INET_DIAG_BC_S_LE = 3
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_IFA_FLAGS = 8
_IFA_F_DADFAILED = 0x08
_ALL_STATES = 0xFFFFFFFF
_TIME_WAIT = 6
# A TIME_WAIT socket left by a connection that a SO_REUSEADDR listener accepted does not stop
# another SO_REUSEADDR listener (every engine's port holder sets it) from binding the port.
_BUT_TIME_WAIT = _ALL_STATES & ~(1 << _TIME_WAIT)
_NLMSGHDR = struct.Struct("=IHHII")
_RTATTR = struct.Struct("=HH")
_BC_OP = struct.Struct("=BBH")  # struct inet_diag_bc_op
# struct inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid.
_DIAG_REQ = struct.Struct("=BBBxI48x")
# struct inet_diag_msg: family, state, (timer, retrans), sport, (dport), src[16], (dst[16], if,
# cookie[2], expires, rqueue, wqueue), uid, inode.
_DIAG_MSG = struct.Struct("=BB2xH2x16s16x4x8x4x4x4xII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RECV_BUFFER = 1 << 16
_NETLINK_TIMEOUT = 5.0

_SIOCGIFCONF = 0x8912
_IFNAMSIZ = 16


class Holder(NamedTuple):
    """One socket of this namespace that holds a port (for log lines)."""

    ip: str  # the address it is bound to, canonical text; "0.0.0.0" or "::" for a wildcard
    port: int
    protocol: str
    state: str  # LISTEN, BOUND, ESTABLISHED, TIME_WAIT, ... (UDP: BOUND or CONNECTED)
    uid: int
    dual_stack: bool  # a [::] socket that also holds the IPv4 port

    def label(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        extra = " dual-stack" if self.dual_stack else ""
        return f"{host}:{self.port}/{self.protocol} {self.state}{extra} uid={self.uid}"


# What is kept per socket: (state, uid, dual_stack). Keyed by address bytes, per port.
_Info = tuple[int, int, bool]
_Table = dict[int, dict[bytes, _Info]]


class _Tables:
    """The holders of one protocol: IPv4 view and IPv6 view, each port -> {address: info}."""

    __slots__ = ("high", "low", "source", "states", "v4", "v6")

    def __init__(self, source: str, ports: tuple[int, int], states: int = _ALL_STATES) -> None:
        self.source = source
        self.low, self.high = ports
        self.states = states  # a bit per TCP state: the sockets that count
        self.v4: _Table = {}
        self.v6: _Table = {}

    def add(self, family: int, raw: bytes, port: int, info: _Info, v6only: bool | None) -> None:
        if not self.low <= port <= self.high:  # port 0: a socket that holds no port
            return
        if not (self.states >> info[0]) & 1:
            return
        if family == 4:
            self.v4.setdefault(port, {}).setdefault(raw[:4], info)
            return
        if raw[:12] == _MAPPED_PREFIX:  # ::ffff:a.b.c.d is an IPv4 binding
            self.v4.setdefault(port, {}).setdefault(raw[12:], info)
            return
        if raw == _WILDCARD[6] and not v6only:
            info = (info[0], info[1], True)
            self.v4.setdefault(port, {}).setdefault(_WILDCARD[4], info)
        self.v6.setdefault(port, {}).setdefault(raw, info)


class BoundIndex:
    """A snapshot of the ports held by sockets of this network namespace.

    Take one per request (``BoundIndex.snapshot()``), then ask it about as many candidates as you
    like: each question is a couple of dict lookups. The snapshot is as old as ``taken_at``
    (``time.monotonic()``); a server that binds a moment later is not in it.

    Reading costs about a microsecond per socket in the tables, and a busy host can have tens of
    thousands (mostly connections and TIME_WAIT on ephemeral ports). ``ports=(low, high)`` has
    the kernel send only sockets whose port is in that range, so a pool on 25565-27030 does not
    pay for them; the snapshot then refuses questions about other ports.
    """

    __slots__ = ("_tables", "elapsed", "port_range", "taken_at")

    def __init__(
        self,
        tables: dict[str, _Tables],
        elapsed: float,
        taken_at: float,
        port_range: tuple[int, int] = (1, 65535),
    ) -> None:
        self._tables = tables
        self.elapsed = elapsed  # seconds the snapshot took to read
        self.taken_at = taken_at
        self.port_range = port_range  # the ports it can answer for, inclusive

    @classmethod
    def snapshot(
        cls,
        protocols: Iterable[str] = PROTOCOLS,
        *,
        ports: tuple[int, int] | None = None,
        ignore_time_wait: bool = False,
    ) -> BoundIndex:
        """Read the socket tables of ``protocols``, only ports ``low..high`` if ``ports`` is given.

        ``ignore_time_wait`` leaves out TCP sockets in TIME_WAIT: right for a consumer that binds
        with SO_REUSEADDR, such as a container engine's port holder, which a TIME_WAIT left by
        its own earlier listener (the usual one) does not stop. The pool's own checks keep them:
        one left by a socket without SO_REUSEADDR does refuse such a bind, and the tables cannot
        tell the two apart.

        Raises OSError when neither sock_diag nor /proc/net can be read, ValueError on arguments.
        """
        low, high = ports if ports is not None else (1, 65535)
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"ports must be (low, high) with 1 <= low <= high <= 65535: {ports}")
        started = time.perf_counter()
        states = _BUT_TIME_WAIT if ignore_time_wait else _ALL_STATES
        tables = {
            protocol: _read_tables(_check_protocol(protocol), (low, high), states) for protocol in protocols
        }
        elapsed = time.perf_counter() - started
        return cls(tables, elapsed, time.monotonic(), (low, high))

    @property
    def sources(self) -> dict[str, str]:
        """How each protocol was read: ``"netlink"`` or ``"proc"``."""
        return {protocol: tables.source for protocol, tables in self._tables.items()}

    def is_bound(self, ip: str, port: int, protocol: str, *, dual_stack: bool = False) -> bool:
        """True when some socket holds ``port`` in a way that clashes with an entry on ``ip``.

        ``ip`` may be in any form ``ipaddress`` accepts. See the module text for the rules.
        """
        tables = self._tables_for(protocol, port)
        family, raw = _packed(ip)
        if family == 4:
            return _clashes(tables.v4.get(port), raw, _WILDCARD[4])
        if _clashes(tables.v6.get(port), raw, _WILDCARD[6]):
            return True
        return dual_stack and raw == _WILDCARD[6] and bool(tables.v4.get(port))

    def holders(self, ip: str, port: int, protocol: str, *, dual_stack: bool = False) -> list[Holder]:
        """The sockets that make ``is_bound`` true, for a log line; empty when it is false."""
        tables = self._tables_for(protocol, port)
        family, raw = _packed(ip)
        found: list[Holder] = []
        if family == 4:
            for address, info in _matching(tables.v4.get(port), raw, _WILDCARD[4]):
                # A dual-stack [::] socket sits in the IPv4 view as 0.0.0.0: name it as it is.
                shown = _WILDCARD[6] if info[2] else address
                found.append(_holder(shown, port, protocol, info))
            return found
        for address, info in _matching(tables.v6.get(port), raw, _WILDCARD[6]):
            found.append(_holder(address, port, protocol, info))
        if dual_stack and raw == _WILDCARD[6]:
            for address, info in (tables.v4.get(port) or {}).items():
                if not info[2]:  # dual-stack holders were listed from the IPv6 view
                    found.append(_holder(address, port, protocol, info))
        return found

    def ports(self, protocol: str) -> set[int]:
        """Every port number some socket of ``protocol`` holds, on any address of any family."""
        tables = self._tables_for(protocol, None)
        return set(tables.v4) | set(tables.v6)

    def _tables_for(self, protocol: str, port: int | None) -> _Tables:
        tables = self._tables.get(protocol)
        if tables is None:
            raise ValueError(f"this snapshot did not read {protocol!r} sockets")
        if port is not None and not tables.low <= port <= tables.high:
            raise ValueError(f"this snapshot read ports {tables.low}-{tables.high}, not {port}")
        return tables


def snapshot(
    protocols: Iterable[str] = PROTOCOLS,
    *,
    ports: tuple[int, int] | None = None,
    ignore_time_wait: bool = False,
) -> BoundIndex:
    """Same as ``BoundIndex.snapshot``."""
    return BoundIndex.snapshot(protocols, ports=ports, ignore_time_wait=ignore_time_wait)


def is_bound(ip: str, port: int, protocol: str, *, dual_stack: bool = False) -> bool:
    """True when some socket of this host holds ``(ip, port, protocol)`` or a clashing binding.

    One check asks the kernel for the sockets on ``port`` only; to check many candidates, take
    one ``BoundIndex.snapshot()`` and ask it.
    """
    index = BoundIndex.snapshot((protocol,), ports=(port, port))
    return index.is_bound(ip, port, protocol, dual_stack=dual_stack)


def local_addresses() -> set[str]:
    """Every address an interface of this network namespace carries, IPv4 and IPv6, canonical.

    IPv6 link-local addresses are included without their zone. Addresses whose duplicate address
    detection failed are left out: nothing can bind them.
    """
    try:
        return _addresses_from_rtnetlink()
    except OSError:
        return _addresses_from_proc_and_ioctl()


def is_local_address(ip: str) -> bool:
    """True for a wildcard, any loopback address, or an address of :func:`local_addresses`.

    An IPv4-mapped IPv6 address is judged as its IPv4 address. Raises ValueError when ``ip`` is
    not an IP address.
    """
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified or address.is_loopback:
        return True
    return str(address) in local_addresses()


# --- bound ports -------------------------------------------------------------------------------


def _check_protocol(protocol: str) -> str:
    if protocol not in _IPPROTO:
        raise ValueError(f"protocol must be 'tcp' or 'udp', not {protocol!r}")
    return protocol


@functools.lru_cache(maxsize=4096)  # a pool has few distinct ips, asked about on every draw
def _packed(ip: str) -> tuple[int, bytes]:
    """Family and packed bytes of an entry's address; an IPv4-mapped address counts as IPv4."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.version, address.packed


def _clashes(holders: dict[bytes, _Info] | None, raw: bytes, wildcard: bytes) -> bool:
    if not holders:
        return False
    return raw == wildcard or raw in holders or wildcard in holders


def _matching(
    holders: dict[bytes, _Info] | None, raw: bytes, wildcard: bytes
) -> Iterator[tuple[bytes, _Info]]:
    for address, info in (holders or {}).items():
        if raw == wildcard or address in (raw, wildcard):
            yield address, info


def _holder(raw: bytes, port: int, protocol: str, info: _Info) -> Holder:
    state, uid, dual = info
    names = _TCP_STATES if protocol == "tcp" else _UDP_STATES
    ip = str(ipaddress.ip_address(raw))
    return Holder(ip, port, protocol, names.get(state, f"state {state}"), uid, dual)


def _read_tables(protocol: str, ports: tuple[int, int], states: int = _ALL_STATES) -> _Tables:
    try:
        return _tables_from_sock_diag(protocol, ports, states)
    except OSError:
        return _tables_from_proc(protocol, ports, states)


def _tables_from_sock_diag(
    protocol: str, ports: tuple[int, int] = (1, 65535), states: int = _ALL_STATES
) -> _Tables:
    tables = _Tables("netlink", ports, states)
    unpack, ntohs, add = _DIAG_MSG.unpack_from, socket.ntohs, tables.add
    port_filter = _port_filter(*ports) if ports != (1, 65535) else b""
    with _netlink(_NETLINK_SOCK_DIAG) as sock:
        for family in (4, 6):
            request = _DIAG_REQ.pack(_AF[family], _IPPROTO[protocol], 0, states)
            request += port_filter
            for view, spans in _dump(sock, _SOCK_DIAG_BY_FAMILY, request, seq=family):
                for start, end in spans:
                    _, state, sport, src, uid, _inode = unpack(view, start)
                    raw = src[:4] if family == 4 else src
                    v6only: bool | None = None
                    if family == 6 and raw == _WILDCARD[6]:
                        attrs = _attributes(view[start:end], _DIAG_MSG.size)
                        flag = attrs.get(_INET_DIAG_SKV6ONLY)
                        v6only = bool(flag[0]) if flag else False
                    add(family, raw, ntohs(sport), (state, uid, False), v6only)
    return tables


def _port_filter(low: int, high: int) -> bytes:
    """An INET_DIAG_REQ_BYTECODE attribute: only sockets with low <= local port <= high.

    Each op is (code, yes, no) and its argument sits in the ``no`` field of the next op. The
    program accepts a socket when it runs exactly off its end; a failed test jumps 4 bytes past
    the end, which rejects it.
    """
    program = (
        _BC_OP.pack(_INET_DIAG_BC_S_GE, 8, 20)
        + _BC_OP.pack(0, 0, low)
        + _BC_OP.pack(_INET_DIAG_BC_S_LE, 8, 12)
        + _BC_OP.pack(0, 0, high)
    )
    return _RTATTR.pack(_RTATTR.size + len(program), _INET_DIAG_REQ_BYTECODE) + program


def _proc_net(name: str) -> str:
    # thread-self follows the calling thread's namespace; /proc/net follows the main thread's.
    base = "/proc/thread-self/net" if os.path.isdir("/proc/thread-self/net") else "/proc/net"
    return f"{base}/{name}"


def _tables_from_proc(
    protocol: str, ports: tuple[int, int] = (1, 65535), states: int = _ALL_STATES
) -> _Tables:
    tables = _Tables("proc", ports, states)
    for family, suffix in ((4, ""), (6, "6")):
        try:
            with open(_proc_net(protocol + suffix), encoding="ascii") as table:
                lines = table.read().splitlines()[1:]
        except FileNotFoundError:
            if family == 6:  # a kernel without IPv6
                continue
            raise
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            address, _, port_hex = fields[1].partition(":")
            raw = _proc_address(address)
            info = (int(fields[3], 16), int(fields[7]), False)
            # /proc does not show IPV6_V6ONLY: take every [::] socket as dual-stack.
            tables.add(family, raw, int(port_hex, 16), info, v6only=False)
    return tables


def _proc_address(text: str) -> bytes:
    """/proc/net prints each 32-bit word of an address as a host-order hex number."""
    data = bytes.fromhex(text)
    if socket.htonl(1) == 1:
        return data
    return b"".join(data[i : i + 4][::-1] for i in range(0, len(data), 4))


# --- local addresses ---------------------------------------------------------------------------


def _addresses_from_rtnetlink() -> set[str]:
    found: set[str] = set()
    request = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    with _netlink(_NETLINK_ROUTE) as sock:
        batches = _dump(sock, _RTM_GETADDR, request, seq=1, msg_type=_RTM_NEWADDR)
        for payload in (view[start:end] for view, spans in batches for start, end in spans):
            family, _, flags, _, _ = _IFADDRMSG.unpack_from(payload)
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            attrs = _attributes(payload, _IFADDRMSG.size)
            if _IFA_FLAGS in attrs:
                flags = struct.unpack_from("=I", attrs[_IFA_FLAGS])[0]
            if flags & _IFA_F_DADFAILED:
                continue
            # IPv4 keeps the local address in IFA_LOCAL (IFA_ADDRESS is the peer on a
            # point-to-point link); IPv6 sets IFA_LOCAL only when it has a peer too.
            raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
            if raw and len(raw) in (4, 16):
                found.add(str(ipaddress.ip_address(bytes(raw))))
    return found


def _addresses_from_proc_and_ioctl() -> set[str]:
    found: set[str] = set()
    try:
        with open(_proc_net("if_inet6"), encoding="ascii") as table:
            for line in table:
                fields = line.split()
                if len(fields) >= 6 and not int(fields[4], 16) & _IFA_F_DADFAILED:
                    found.add(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    except FileNotFoundError:  # a kernel without IPv6
        pass
    found.update(_ipv4_addresses_from_ioctl())
    return found


def _ipv4_addresses_from_ioctl() -> set[str]:
    """SIOCGIFCONF: every IPv4 address of every interface, secondary ones included."""
    word = struct.calcsize("L")
    ifmap = struct.calcsize("LLHBBB")
    ifreq_size = _IFNAMSIZ + max(16, -(-ifmap // word) * word)
    count = 64
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while True:
            buffer = array.array("B", bytes(ifreq_size * count))
            address, _ = buffer.buffer_info()
            request = struct.pack("iL", len(buffer), address)
            reply = fcntl.ioctl(sock.fileno(), _SIOCGIFCONF, request)
            used = struct.unpack("iL", reply)[0]
            if used < len(buffer) - ifreq_size:  # room to spare: nothing was cut off
                break
            count *= 4
    data = buffer.tobytes()[:used]
    found: set[str] = set()
    for offset in range(0, used, ifreq_size):
        # struct sockaddr_in after the name: family (2), port (2), address (4).
        (family,) = struct.unpack_from("=H", data, offset + _IFNAMSIZ)
        if family == socket.AF_INET:
            raw = data[offset + _IFNAMSIZ + 4 : offset + _IFNAMSIZ + 8]
            found.add(socket.inet_ntop(socket.AF_INET, raw))
    return found


# --- netlink -----------------------------------------------------------------------------------


def _netlink(protocol: int) -> socket.socket:
    """A netlink socket (Linux only); use it in a ``with``."""
    family = getattr(socket, "AF_NETLINK", None)
    if family is None:
        raise OSError(errno.EAFNOSUPPORT, "netlink sockets are Linux-only")
    sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
    sock.settimeout(_NETLINK_TIMEOUT)
    return sock


def _dump(
    sock: socket.socket, request_type: int, body: bytes, seq: int, msg_type: int | None = None
) -> Iterator[tuple[memoryview, list[tuple[int, int]]]]:
    """Send one dump request; yield each received batch as (buffer, [(start, end) of payloads]).

    Batches rather than single messages because a big socket table has tens of thousands of
    them. The buffer is reused: use a batch before asking for the next one.
    """
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), request_type, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0)
    sock.sendto(header + body, (0, 0))
    buffer = bytearray(_RECV_BUFFER)
    view = memoryview(buffer)
    expected = request_type if msg_type is None else msg_type
    unpack_header = _NLMSGHDR.unpack_from
    header_size = _NLMSGHDR.size
    while True:
        size, _, flags, _ = sock.recvmsg_into([buffer])
        if flags & socket.MSG_TRUNC:
            raise OSError(errno.EMSGSIZE, "netlink answer larger than the receive buffer")
        spans: list[tuple[int, int]] = []
        offset = 0
        while offset + header_size <= size:
            length, kind, _, answer_seq, _ = unpack_header(buffer, offset)
            if length < header_size or offset + length > size:
                raise OSError(errno.EPROTO, "malformed netlink message")
            start, end = offset + header_size, offset + length
            offset += (length + 3) & ~3
            if answer_seq != seq:
                continue
            if kind == expected:
                spans.append((start, end))
            elif kind in (_NLMSG_DONE, _NLMSG_ERROR):
                (code,) = struct.unpack_from("=i", buffer, start) if end - start >= 4 else (0,)
                if code < 0:
                    raise OSError(-code, os.strerror(-code))
                if kind == _NLMSG_DONE:
                    yield view, spans
                    return
        yield view, spans


def _attributes(payload: memoryview, start: int) -> dict[int, memoryview]:
    """The route attributes (struct rtattr) that follow a fixed header, by type."""
    attrs: dict[int, memoryview] = {}
    offset = (start + 3) & ~3
    while offset + _RTATTR.size <= len(payload):
        length, kind = _RTATTR.unpack_from(payload, offset)
        if length < _RTATTR.size:
            break
        attrs[kind & 0x3FFF] = payload[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    return attrs
