"""The kernel's reserved ports, for real, in a private network namespace.

``net.ipv4.ip_local_reserved_ports`` belongs to a network namespace: every test here runs its
code on the main thread moved into a namespace of its own (tests/netns.py ``entered``) and first
checks that the sysctls it sees there are that namespace's, so the host's list is never written.
The namespace's ``ip_local_port_range`` is narrowed to 40000-40100 around a pool of
40000-40049, so a few thousand outgoing connections try every local port there is.
"""

from __future__ import annotations

import json
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightd.adapters.port_set import PortSet
from lightd.adapters.reserved_ports import (
    SYSCTL,
    KernelReservation,
    detect,
    ephemeral_range,
    read_list,
    read_text,
    write_list,
)
from tests.netns import NetNs, entered

pytestmark = pytest.mark.slow

LOW, HIGH = 40000, 40100  # the namespace's ephemeral range
POOL = range(40000, 40050)  # the pool, inside it
LISTENER = 30999  # outside the range: the listener's own port is never an ephemeral one


def flags(ports: range | list[int]) -> bytes:
    wanted = bytearray(65536)
    for port in ports:
        wanted[port] = 1
    return bytes(wanted)


def reserve_by_hand(ns: NetNs, text: str) -> None:
    """Another program (an operator's sysctl -w) writing the namespace's list."""
    ns.run("sysctl", "-q", "-w", f"net.ipv4.ip_local_reserved_ports={text}")


@pytest.fixture
def inside(ns: NetNs) -> Iterator[NetNs]:
    ns.run("ip", "link", "set", "lo", "up")
    ns.run("sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={LOW} {HIGH}")
    with entered(ns.path) as name:
        # This thread's view of /proc/sys/net is the namespace's: the range set from inside it.
        assert name == ns.ns and ephemeral_range() == (LOW, HIGH)
        assert read_text() == "\n", "a new namespace starts with an empty list"
        yield ns


def outgoing_ports(count: int, kind: int, family: int = socket.AF_INET) -> Counter[int]:
    """The local ports the kernel gave ``count`` outgoing loopback connections, one at a time."""
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    seen: Counter[int] = Counter()
    with socket.socket(family, kind) as listener:
        listener.bind((host, LISTENER))
        if kind == socket.SOCK_STREAM:
            listener.listen(64)
        for _ in range(count):
            with socket.socket(family, kind) as client:
                # Closed with a reset, so no TIME_WAIT keeps the port: every port is free again.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.connect((host, LISTENER))  # udp: binds a local port all the same
                seen[client.getsockname()[1]] += 1
                if kind == socket.SOCK_STREAM:
                    accepted, _ = listener.accept()
                    accepted.close()
    return seen


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_no_outgoing_connection_takes_a_pool_port(inside, tmp_path):
    reserve_by_hand(inside, "40070")  # somebody else's, inside the range too
    kernel = KernelReservation(tmp_path / "reserved_ports.json")
    kernel.apply(flags(POOL))
    assert read_text() == "40000-40049,40070\n"
    assert kernel.status()["count"] == 50 and kernel.status()["others"] == 1

    tcp = outgoing_ports(3000, socket.SOCK_STREAM)
    udp = outgoing_ports(1000, socket.SOCK_DGRAM)
    free = set(range(LOW, HIGH + 1)) - set(POOL) - {40070}
    assert sum(tcp.values()) == 3000 and sum(udp.values()) == 1000
    assert set(tcp) <= free, f"pool ports taken: {sorted(set(tcp) - free)}"
    assert set(udp) <= free, f"pool ports taken: {sorted(set(udp) - free)}"
    assert len(tcp) > 10, "the connections went round the free ports"
    if ipv6_loopback():  # one list for both families
        tcp6 = outgoing_ports(1000, socket.SOCK_STREAM, socket.AF_INET6)
        assert set(tcp6) <= free


def test_with_the_setting_off_outgoing_connections_take_pool_ports(inside, tmp_path):
    kernel = KernelReservation(tmp_path / "reserved_ports.json", reserve=False, reason=detect(False)[1])
    kernel.apply(flags(POOL))
    assert read_text() == "\n" and not (tmp_path / "reserved_ports.json").exists()
    tcp = outgoing_ports(3000, socket.SOCK_STREAM)
    taken = sorted(set(tcp) & set(POOL))
    assert taken, "without the reservation the kernel hands out pool ports"
    assert kernel.warnings(list(POOL))[0].startswith(
        "ports 40000-40049 are inside the kernel's ephemeral port range 40000-40100"
    )
    assert kernel.warnings([30000]) == []


def test_a_restart_takes_back_only_the_numbers_it_added(inside, tmp_path):
    record = tmp_path / "reserved_ports.json"
    reserve_by_hand(inside, "8080,40049")  # 40049 is somebody else's before lightd starts
    first = KernelReservation(record)
    first.apply(flags(POOL))
    assert read_text() == "8080,40000-40049\n"
    assert json.loads(record.read_text())["ports"] == "40000-40048"
    # Killed; meanwhile the store lost entries (a delete committed, the kernel not told yet) and
    # somebody else reserved one more number.
    reserve_by_hand(inside, read_text().strip() + ",9090")
    second = KernelReservation(record)
    second.apply(flags(range(40000, 40010)))
    assert read_text() == "8080,9090,40000-40009,40049\n"
    assert second.status()["started"]["found_ours"] == 49
    second.apply(flags([]))
    assert read_text() == "8080,9090,40049\n", "lightd's gone, everybody else's kept"


def test_a_record_of_another_boot_or_namespace_claims_nothing(inside, tmp_path):
    record = tmp_path / "reserved_ports.json"
    reserve_by_hand(inside, "8080,40000-40049")
    for stale in ({"boot_id": "another-boot"}, {"netns": "net:[1]"}, None):
        body = {"boot_id": read_boot_id(), "netns": inside.ns, "ports": "8080,40000-40049"}
        if stale is None:
            record.write_text("{not json")
        else:
            record.write_text(json.dumps({**body, **stale}))
        kernel = KernelReservation(record)
        kernel.apply(flags([]))
        assert read_text() == "8080,40000-40049\n", stale
    # The same record, true for this boot and namespace, is lightd's.
    record.write_text(json.dumps({"boot_id": read_boot_id(), "netns": inside.ns, "ports": "40000-40049"}))
    KernelReservation(record).apply(flags([]))
    assert read_text() == "8080\n"


def read_boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def test_the_record_always_covers_what_lightd_listed(inside, tmp_path):
    """Grown before the kernel's list, shrunk after it: a crash in between never leaves a number
    of lightd's listed but unrecorded (it would stay reserved for good)."""
    record = tmp_path / "reserved_ports.json"
    kernel = KernelReservation(record)
    for pool in ([40000], list(POOL), [40001, 40002], [], [40003]):
        kernel.apply(flags(pool))
        recorded = PortSet.parse(json.loads(record.read_text())["ports"])
        assert read_list() <= recorded and recorded == PortSet.of(pool)


def test_a_list_longer_than_a_page_is_written_whole(inside, tmp_path):
    reserve_by_hand(inside, "1")
    every_other = list(range(2, 65536, 2))  # 32,767 ranges, ~190 kB of text
    kernel = KernelReservation(tmp_path / "reserved_ports.json")
    kernel.apply(flags(every_other))
    assert read_list() == PortSet.of([1, *every_other])
    kernel.apply(flags([*every_other, 3]))  # grows: added past offset 0, nothing dropped
    assert read_list() == PortSet.of([1, 3, *every_other])
    kernel.apply(flags(every_other[:-100]))  # shrinks: rewritten a page at a time
    assert read_list() == PortSet.of([1, *every_other[:-100]])
    kernel.apply(flags(range(1, 65536)))  # a full pool is one range
    assert read_text() == "1-65535\n"
    kernel.apply(flags([]))
    assert read_text() == "1\n"


def test_one_page_is_one_write_and_growth_past_it_only_adds(inside):
    small = PortSet.of(range(40000, 40050))
    assert write_list(small, PortSet(), SYSCTL) == ("40000-40049\n", 1)
    long = PortSet.of(range(2, 20000, 2))  # ~57 kB
    whole, calls = write_list(long, small, SYSCTL)
    assert calls > 10 and read_list() == long and whole == read_text()
    grown = long | PortSet.of([30001, 30003])
    assert write_list(grown, long, SYSCTL)[1] == 1, "only the two new numbers are written"
    assert read_list() == grown


def test_detect_names_why_it_is_off(inside, tmp_path):
    assert detect(True)[0] is True
    assert detect(False) == (False, "turned off in the settings (pool.reserve_ports is false)")
    on, reason = detect(True, str(tmp_path / "missing"))
    assert not on and "cannot be written" in reason
    assert read_text() == "\n", "detecting writes nothing"
