"""The host adapter against real sockets on loopback.

Each case holds a port with a plain socket, as some other server on the host would, then asks
``lightd.adapters.host`` about the same entry and the entries that clash with it. Where it can,
a case also asks the kernel itself (``kernel_refuses``: bind the entry's address the way a server
without SO_REUSEADDR would, and listen for TCP) so the adapter's answer is checked against what
Linux really refuses, not against what we believe it refuses.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from lightd.adapters import host
from tests.ports import quiet_port

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the host adapter is Linux-only")

DOC_V4 = "203.0.113.7"  # TEST-NET-3, never assigned to a host
DOC_V6 = "2001:db8::7"


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _kind(protocol: str) -> socket.SocketKind:
    return socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM


@contextlib.contextmanager
def hold(
    ip: str, protocol: str, *, port: int = 0, listen: bool = True, v6only: bool | None = None
) -> Iterator[int]:
    """Bind (and for TCP, listen on) ``ip``, like a server without SO_REUSEADDR; yield the port."""
    with socket.socket(_family(ip), _kind(protocol)) as sock:
        if v6only is not None:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind((ip, port))
        if protocol == "tcp" and listen:
            sock.listen()
        yield sock.getsockname()[1]


def kernel_refuses(ip: str, port: int, protocol: str, *, v6only: bool = True) -> bool:
    """Would a server without SO_REUSEADDR fail to bind (and listen on) this entry right now?"""
    with socket.socket(_family(ip), _kind(protocol)) as sock:
        if ":" in ip:
            mapped = ipaddress.IPv6Address(ip).ipv4_mapped is not None  # needs a dual-stack socket
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only and not mapped))
        try:
            sock.bind((ip, port))
            if protocol == "tcp":
                sock.listen()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def free_port(protocol: str) -> int:
    """Outside the ephemeral range: no outgoing connection takes it before the assertion."""
    return quiet_port(protocol)


def netlink_sees_bound_only_sockets() -> bool:
    release = platform.release().split("-")[0].split(".")
    try:
        major, minor = int(release[0]), int(release[1])
    except (IndexError, ValueError):
        return False
    return (major, minor) >= (6, 8)


@pytest.fixture(scope="module")
def ipv6() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        pytest.skip("IPv6 loopback is not available")


@pytest.fixture
def proc_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sock_diag netlink unavailable, as in a sandbox that refuses it."""

    def refused(protocol: str, ports: tuple[int, int], states: int = 0) -> host._Tables:
        raise PermissionError(errno.EACCES, "sock_diag refused")

    monkeypatch.setattr(host, "_tables_from_sock_diag", refused)


PROTOCOLS = ["tcp", "udp"]


# --- a plain socket on 0.0.0.0 or 127.0.0.1 -----------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wildcard_holder_blocks_itself_and_every_address(protocol: str) -> None:
    with hold("0.0.0.0", protocol) as port:
        index = host.snapshot()
        for ip in ("0.0.0.0", "127.0.0.1", "127.0.0.5", "::ffff:127.0.0.1"):
            assert index.is_bound(ip, port, protocol), ip
            assert kernel_refuses(ip, port, protocol), ip
        assert port in index.ports(protocol)
        assert host.is_bound("0.0.0.0", port, protocol)
    assert not host.is_bound("0.0.0.0", port, protocol)
    assert not host.is_bound("127.0.0.1", port, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_specific_holder_blocks_itself_and_the_wildcard_only(protocol: str) -> None:
    with hold("127.0.0.1", protocol) as port:
        index = host.snapshot()
        for ip in ("127.0.0.1", "0.0.0.0"):
            assert index.is_bound(ip, port, protocol), ip
            assert kernel_refuses(ip, port, protocol), ip
        # Another address of the same family is a different binding.
        assert not index.is_bound("127.0.0.2", port, protocol)
        assert not kernel_refuses("127.0.0.2", port, protocol)
    assert not host.is_bound("127.0.0.1", port, protocol)
    assert not host.is_bound("0.0.0.0", port, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ports_nobody_holds_are_free(protocol: str) -> None:
    with hold("0.0.0.0", protocol) as port:
        other = free_port(protocol)
        index = host.snapshot()
        assert index.is_bound("0.0.0.0", port, protocol)
        assert not index.is_bound("0.0.0.0", other, protocol)
        assert not index.is_bound("127.0.0.1", other, protocol)


def test_the_other_protocol_is_not_held() -> None:
    with hold("0.0.0.0", "tcp") as port:
        index = host.snapshot()
        assert index.is_bound("0.0.0.0", port, "tcp")
        if not kernel_refuses("0.0.0.0", port, "udp"):  # unless someone holds it for real
            assert not index.is_bound("0.0.0.0", port, "udp")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_holders_name_the_socket_for_the_log(protocol: str) -> None:
    state = "LISTEN" if protocol == "tcp" else "BOUND"
    with hold("127.0.0.1", protocol) as port:
        index = host.snapshot()
        holders = index.holders("0.0.0.0", port, protocol)
        assert [h.label() for h in holders] == [f"127.0.0.1:{port}/{protocol} {state} uid={holders[0].uid}"]
        assert index.holders("127.0.0.2", port, protocol) == []


# --- TCP sockets that are not listening ----------------------------------------------------------


@pytest.mark.skipif(
    not netlink_sees_bound_only_sockets(),
    reason="sock_diag lists bound-only TCP sockets since Linux 6.8",
)
@pytest.mark.parametrize("holder_ip", ["127.0.0.1", "0.0.0.0"])
def test_tcp_bound_but_not_listening_counts_as_bound(holder_ip: str) -> None:
    """A bound, not listening TCP socket refuses any bind without SO_REUSEADDR, and its owner
    will usually listen a moment later: better to leak the port than hand it out twice."""
    with hold(holder_ip, "tcp", listen=False) as port:
        index = host.snapshot()
        if index.sources["tcp"] != "netlink":
            pytest.skip("sock_diag netlink is not available here")
        for ip in ("127.0.0.1", "0.0.0.0"):
            assert index.is_bound(ip, port, "tcp"), ip
            assert kernel_refuses(ip, port, "tcp"), ip
        assert [h.state for h in index.holders(holder_ip, port, "tcp")] == ["BOUND"]
    assert not host.is_bound(holder_ip, port, "tcp")


def test_tcp_connections_and_time_wait_count_as_bound() -> None:
    """A client's local port: live, then in TIME_WAIT. Made without SO_REUSEADDR, both refuse even
    a SO_REUSEADDR bind and listen (Docker's way), and the tables cannot show the flag.

    The client binds before it connects: bind() picks a port no socket holds, where connect()
    alone may share one with an older connection's TIME_WAIT (another 4-tuple), and the index
    keeps one holder per address."""
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.bind(("127.0.0.1", 0))
        client.connect(server.getsockname())
        port = client.getsockname()[1]
        accepted, _ = server.accept()
        with accepted:
            index = host.snapshot()
            assert index.is_bound("0.0.0.0", port, "tcp")
            assert index.is_bound("127.0.0.1", port, "tcp")
            assert kernel_refuses("0.0.0.0", port, "tcp")
            assert "ESTABLISHED" in {h.state for h in index.holders("0.0.0.0", port, "tcp")}
            client.close()  # the side that closes first keeps the TIME_WAIT
        time.sleep(0.05)
        index = host.snapshot()
        assert "TIME_WAIT" in {h.state for h in index.holders("0.0.0.0", port, "tcp")}
        assert kernel_refuses("0.0.0.0", port, "tcp")


@pytest.mark.parametrize("source", ["netlink", "proc"])
def test_a_reuseaddr_listeners_time_wait_is_ignored_when_asked(
    source: str, request: pytest.FixtureRequest
) -> None:
    """What a container engine's port holder leaves after a stop: it listened with SO_REUSEADDR
    and closed an accepted connection first (Docker's userland proxy does), so TIME_WAIT sits on
    the port. Another SO_REUSEADDR listener may bind it (the kernel says so here), and the
    engine's pre-start check (``ignore_time_wait``) must not call it busy; the pool's own check
    still does, because one left by a socket without SO_REUSEADDR would refuse that bind."""
    if source == "proc":
        request.getfixturevalue("proc_only")
    port = free_port("tcp")
    with socket.socket() as listener, socket.socket() as client:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", port))
        listener.listen()
        client.connect(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first and keeps the TIME_WAIT
        client.recv(1)
    time.sleep(0.05)
    everything = host.snapshot(["tcp"], ports=(port, port))
    assert {h.state for h in everything.holders("0.0.0.0", port, "tcp")} == {"TIME_WAIT"}
    for_engines = host.snapshot(["tcp"], ports=(port, port), ignore_time_wait=True)
    assert not for_engines.is_bound("0.0.0.0", port, "tcp")
    with socket.socket() as engine_holder:
        engine_holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        engine_holder.bind(("0.0.0.0", port))  # what the kernel allows, checked for real
        engine_holder.listen()


# --- IPv6: dual-stack, IPV6_V6ONLY, IPv4-mapped --------------------------------------------------


@pytest.mark.usefixtures("ipv6")
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dual_stack_wildcard_also_holds_the_ipv4_port(protocol: str) -> None:
    with hold("::", protocol, v6only=False) as port:
        index = host.snapshot()
        for ip in ("0.0.0.0", "127.0.0.1", "::", "::1"):
            assert index.is_bound(ip, port, protocol), ip
            assert kernel_refuses(ip, port, protocol), ip
        (holder,) = index.holders("127.0.0.1", port, protocol)
        assert (holder.ip, holder.dual_stack) == ("::", True)
    assert not host.is_bound("0.0.0.0", port, protocol)


@pytest.mark.usefixtures("ipv6")
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_v6only_wildcard_leaves_the_ipv4_port_free(protocol: str) -> None:
    with hold("::", protocol, v6only=True) as port:
        index = host.snapshot()
        assert index.is_bound("::", port, protocol)
        assert index.is_bound("::1", port, protocol)
        assert not index.is_bound("0.0.0.0", port, protocol)
        assert not kernel_refuses("0.0.0.0", port, protocol)


@pytest.mark.usefixtures("ipv6")
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ipv4_mapped_holder_is_an_ipv4_holder(protocol: str) -> None:
    with hold("::ffff:127.0.0.1", protocol, v6only=False) as port:
        index = host.snapshot()
        for ip in ("127.0.0.1", "0.0.0.0", "::ffff:127.0.0.1"):
            assert index.is_bound(ip, port, protocol), ip
            assert kernel_refuses(ip, port, protocol), ip
        assert not index.is_bound("::", port, protocol)
        assert not kernel_refuses("::", port, protocol)
        assert not index.is_bound("127.0.0.2", port, protocol)


@pytest.mark.usefixtures("ipv6")
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ipv6_entries_ignore_ipv4_holders_unless_asked_for_dual_stack(protocol: str) -> None:
    with hold("127.0.0.1", protocol) as port:
        index = host.snapshot()
        # lightd keeps IPv4 and IPv6 as separate entries; Docker binds IPv6 with IPV6_V6ONLY.
        assert not index.is_bound("::", port, protocol)
        assert not kernel_refuses("::", port, protocol, v6only=True)
        # A consumer that binds [::] without IPV6_V6ONLY needs every IPv4 address free too.
        assert index.is_bound("::", port, protocol, dual_stack=True)
        assert kernel_refuses("::", port, protocol, v6only=False)
        assert [h.ip for h in index.holders("::", port, protocol, dual_stack=True)] == ["127.0.0.1"]
        assert not index.is_bound("::1", port, protocol, dual_stack=True)


@pytest.mark.usefixtures("ipv6")
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ipv6_specific_and_wildcard_clash(protocol: str) -> None:
    with hold("::1", protocol) as port:
        index = host.snapshot()
        for ip in ("::1", "::"):
            assert index.is_bound(ip, port, protocol), ip
            assert kernel_refuses(ip, port, protocol), ip
        assert not index.is_bound("0.0.0.0", port, protocol)


# --- the /proc fallback ---------------------------------------------------------------------------


@pytest.mark.usefixtures("proc_only")
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_proc_fallback_sees_the_same_holders(protocol: str) -> None:
    with hold("0.0.0.0", protocol) as wide, hold("127.0.0.1", protocol) as narrow:
        index = host.snapshot()
        assert index.sources == {"tcp": "proc", "udp": "proc"}
        assert index.is_bound("127.0.0.1", wide, protocol)
        assert index.is_bound("0.0.0.0", narrow, protocol)
        assert not index.is_bound("127.0.0.2", narrow, protocol)
    assert not host.is_bound("0.0.0.0", wide, protocol)


@pytest.mark.usefixtures("ipv6", "proc_only")
def test_proc_fallback_takes_every_ipv6_wildcard_as_dual_stack() -> None:
    """/proc does not show IPV6_V6ONLY, so the fallback errs on the side of bound."""
    with hold("::", "tcp", v6only=True) as port:
        index = host.snapshot()
        assert index.is_bound("::", port, "tcp")
        assert index.is_bound("0.0.0.0", port, "tcp")


def test_netlink_and_proc_agree_on_listeners() -> None:
    with hold("0.0.0.0", "tcp") as tcp_port, hold("127.0.0.1", "udp") as udp_port:
        for protocol, port in (("tcp", tcp_port), ("udp", udp_port)):
            netlink = host._tables_from_sock_diag(protocol)
            proc = host._tables_from_proc(protocol)
            assert netlink.v4[port] == proc.v4[port]


# --- snapshot bookkeeping -------------------------------------------------------------------------


def test_snapshot_refuses_questions_it_cannot_answer() -> None:
    index = host.snapshot(["tcp"])
    assert set(index.sources) == {"tcp"}
    assert index.elapsed >= 0
    with pytest.raises(ValueError, match="did not read 'udp'"):
        index.is_bound("0.0.0.0", 25565, "udp")
    with pytest.raises(ValueError, match="protocol"):
        host.snapshot(["sctp"])
    with pytest.raises(ValueError):
        index.is_bound("not-an-ip", 25565, "tcp")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_port_range_snapshot_sees_its_range_only(protocol: str) -> None:
    with hold("0.0.0.0", protocol) as port:
        index = host.snapshot([protocol], ports=(port, port))
        assert index.port_range == (port, port)
        assert index.is_bound("127.0.0.1", port, protocol)
        assert index.ports(protocol) == {port}
        with pytest.raises(ValueError, match="read ports"):
            index.is_bound("127.0.0.1", port + 1, protocol)
        assert port not in host.snapshot([protocol], ports=(port + 1, 65535)).ports(protocol)
    with pytest.raises(ValueError):
        host.snapshot(ports=(2, 1))
    with pytest.raises(ValueError):
        host.snapshot(ports=(0, 10))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_kernel_applies_the_port_filter(protocol: str) -> None:
    """The bytecode filter runs in the kernel: no socket outside the range is even sent."""
    with hold("127.0.0.1", protocol) as low, hold("127.0.0.1", protocol) as high:
        low, high = min(low, high), max(low, high)
        request = host._DIAG_REQ.pack(socket.AF_INET, host._IPPROTO[protocol], 0, 0xFFFFFFFF)
        request += host._port_filter(low, high)
        seen = set()
        with host._netlink(host._NETLINK_SOCK_DIAG) as sock:
            for view, spans in host._dump(sock, host._SOCK_DIAG_BY_FAMILY, request, seq=7):
                for start, _ in spans:
                    seen.add(socket.ntohs(host._DIAG_MSG.unpack_from(view, start)[2]))
        assert {low, high} <= seen
        assert all(low <= port <= high for port in seen)


@pytest.mark.usefixtures("proc_only")
def test_the_proc_fallback_honours_the_port_range() -> None:
    with hold("0.0.0.0", "tcp") as port:
        index = host.snapshot(["tcp"], ports=(port, port))
        assert index.sources == {"tcp": "proc"}
        assert index.ports("tcp") == {port}


# --- local addresses ------------------------------------------------------------------------------


def test_local_addresses_hold_loopback_and_not_a_documentation_address() -> None:
    addresses = host.local_addresses()
    assert "127.0.0.1" in addresses
    assert DOC_V4 not in addresses
    assert DOC_V6 not in addresses
    assert all(addr == str(ipaddress.ip_address(addr)) for addr in addresses)


@pytest.mark.usefixtures("ipv6")
def test_local_addresses_hold_ipv6_loopback() -> None:
    assert "::1" in host.local_addresses()


def test_rtnetlink_and_the_fallback_agree() -> None:
    assert host._addresses_from_rtnetlink() == host._addresses_from_proc_and_ioctl()


def test_local_addresses_fall_back_when_rtnetlink_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = host.local_addresses()

    def refused() -> set[str]:
        raise PermissionError(errno.EACCES, "rtnetlink refused")

    monkeypatch.setattr(host, "_addresses_from_rtnetlink", refused)
    assert host.local_addresses() == expected


@pytest.mark.parametrize(
    "ip", ["0.0.0.0", "::", "127.0.0.1", "127.0.0.5", "::1", "::ffff:127.0.0.1", "0:0::0"]
)
def test_wildcards_and_loopback_are_always_local(ip: str) -> None:
    assert host.is_local_address(ip)


@pytest.mark.parametrize("ip", [DOC_V4, DOC_V6, "::ffff:203.0.113.7"])
def test_addresses_no_interface_carries_are_not_local(ip: str) -> None:
    assert not host.is_local_address(ip)


def test_every_interface_address_is_local() -> None:
    for address in host.local_addresses():
        assert host.is_local_address(address)


def test_is_local_address_rejects_text_that_is_no_address() -> None:
    with pytest.raises(ValueError):
        host.is_local_address("example.com")


# --- another network namespace --------------------------------------------------------------------

NAMESPACE_PROBE = """
import json, sys
from lightd.adapters import host
port = int(sys.argv[1])
index = host.snapshot()
print(json.dumps({
    "addresses": sorted(host.local_addresses()),
    "bound": index.is_bound("0.0.0.0", port, "tcp"),
    "sources": index.sources,
}))
"""


@pytest.mark.slow
def test_a_fresh_network_namespace_sees_only_itself() -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) is not installed")
    with hold("0.0.0.0", "tcp") as port:
        run = subprocess.run(
            [unshare, "--net", sys.executable, "-c", NAMESPACE_PROBE, str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if run.returncode != 0 and "unshare" in run.stderr:
            pytest.skip(f"cannot create a network namespace here: {run.stderr.strip()}")
        assert run.returncode == 0, run.stderr
        seen = json.loads(run.stdout)
        # The host's listener lives in another namespace; a fresh one has loopback down.
        assert seen["bound"] is False
        assert set(seen["addresses"]) <= {"127.0.0.1", "::1"}
        assert seen["sources"] == {"tcp": "netlink", "udp": "netlink"}
