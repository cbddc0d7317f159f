"""IptablesFirewall against the real kernel firewall, inside a private network namespace.

Every test gets a fresh namespace (``tests/netns.py``): the firewall runs its commands through
``nsenter --net=/proc/<pid>/ns/net --`` and the tests read the result with ``iptables-save``
through the same prefix. The host's own firewall is never touched. Without root or without
iptables/unshare/nsenter these tests are skipped, saying which; with CI=true they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from lightd.adapters.iptables import IptablesFirewall, detect
from lightd.core.entry import Entry
from lightd.errors import Unavailable
from tests.netns import NetNs

pytestmark = pytest.mark.slow

JUMP = "-A INPUT -j LIGHTD"


@pytest.fixture
def fw(ns: NetNs) -> IptablesFirewall:
    return IptablesFirewall(command_prefix=ns.prefix)


def rule(port: int, protocol: str = "tcp", ip: str | None = None, chain: str = "LIGHTD") -> str:
    """A lightd rule line exactly as iptables-save prints it."""
    dest = ""
    if ip is not None:
        dest = f"-d {ip}/{128 if ':' in ip else 32} "
    return (
        f"-A {chain} {dest}-p {protocol} -m {protocol} --dport {port} -m comment --comment lightd -j ACCEPT"
    )


def jumps(ns: NetNs, family: int = 4) -> int:
    return ns.save(family).count(JUMP)


def hand(ns: NetNs, family: int, *args: str) -> None:
    """A plain iptables command typed by an operator, inside the namespace."""
    ns.run("iptables" if family == 4 else "ip6tables", *args)


def wrapper_dir(tmp_path: Path, scripts: dict[str, str]) -> Path:
    """A directory of shell wrappers that shadow iptables tools on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = folder / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    return folder


def with_path(ns: NetNs, folder: Path, keep_path: bool = True) -> list[str]:
    path = f"{folder}:{os.environ['PATH']}" if keep_path else str(folder)
    return [*ns.prefix, "env", f"PATH={path}"]


def real(tool: str) -> str:
    found = shutil.which(tool)
    assert found is not None
    return found


# --- the namespace guard itself -----------------------------------------------------------------


def test_namespace_is_private(ns: NetNs) -> None:
    assert ns.ns != os.readlink("/proc/self/ns/net")
    assert ns.save(4) == [":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]


def test_detect_through_the_prefix(ns: NetNs) -> None:
    ok, reason = detect("auto", ns.prefix)
    assert ok and reason.startswith("enabled: running as root with iptables")
    assert detect(False, ns.prefix) == (
        False,
        "turned off in the settings (firewall.enabled is false)",
    )
    # Root without CAP_NET_ADMIN (as in many containers): auto turns off and says why.
    if shutil.which("setpriv"):
        weak = [*ns.prefix, "setpriv", "--bounding-set=-net_admin"]
        ok, reason = detect("auto", weak)
        assert not ok and reason.startswith("iptables-save failed (") and "Permission denied" in reason
        with pytest.raises(Unavailable, match="firewall.enabled is true but the firewall cannot work"):
            detect(True, weak)


# --- rules ------------------------------------------------------------------------------------


async def test_wildcard_and_specific_ipv4(ns: NetNs, fw: IptablesFirewall) -> None:
    await fw.open(
        [
            Entry("0.0.0.0", 25565, "tcp"),
            Entry("0.0.0.0", 25565, "udp"),
            Entry("10.0.0.5", 25566, "tcp"),
            Entry("127.0.0.1", 8080, "udp"),
        ]
    )
    assert ns.save(4) == [
        ":INPUT ACCEPT [0:0]",
        ":FORWARD ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":LIGHTD - [0:0]",
        JUMP,
        rule(25565, "tcp"),
        rule(25565, "udp"),
        rule(25566, "tcp", "10.0.0.5"),
        rule(8080, "udp", "127.0.0.1"),
    ]
    assert not any("-d 0.0.0.0" in line for line in ns.save(4))
    assert ":LIGHTD - [0:0]" not in ns.save(6)  # no IPv6 entry, ip6tables untouched


async def test_ipv6_goes_through_ip6tables(ns: NetNs, fw: IptablesFirewall) -> None:
    await fw.open(
        [
            Entry("::", 27015, "udp"),
            Entry("::1", 27016, "tcp"),
            Entry("2001:db8::5", 27017, "tcp"),
            Entry("0.0.0.0", 27015, "udp"),
        ]
    )
    assert ns.rules("LIGHTD", 6) == [
        rule(27015, "udp"),
        rule(27016, "tcp", "::1"),
        rule(27017, "tcp", "2001:db8::5"),
    ]
    assert jumps(ns, 6) == 1
    assert ns.rules("LIGHTD", 4) == [rule(27015, "udp")]
    assert not any("-d ::/" in line for line in ns.save(6))
    await fw.close([Entry("::1", 27016, "tcp"), Entry("0.0.0.0", 27015, "udp")])
    assert ns.rules("LIGHTD", 6) == [rule(27015, "udp"), rule(27017, "tcp", "2001:db8::5")]
    assert ns.rules("LIGHTD", 4) == []


async def test_open_and_close_one(ns: NetNs, fw: IptablesFirewall) -> None:
    entry = Entry("0.0.0.0", 25565, "tcp")
    await fw.open([entry])
    assert ns.rules("LIGHTD") == [rule(25565)]
    await fw.close([entry])
    assert ns.rules("LIGHTD") == []
    assert jumps(ns) == 1  # the chain and its jump stay, empty
    assert fw.status()["rule_count"] == 0


async def test_bulk_is_one_restore_per_family(ns: NetNs, tmp_path: Path, fw: IptablesFirewall) -> None:
    log = tmp_path / "calls.log"
    logging = {
        tool: f'echo "$0" >> {log}\nexec {real(tool)} "$@"\n'
        for tool in ("iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore")
    }
    counted = IptablesFirewall(command_prefix=with_path(ns, wrapper_dir(tmp_path, logging)))
    tcp = [Entry("0.0.0.0", port, "tcp") for port in range(10000, 15000)]
    udp = [Entry("10.0.0.5", port, "udp") for port in range(20000, 23000)]
    six = [Entry("::", port, "tcp") for port in range(1000, 2000)]
    await counted.open(tcp + udp + six)
    calls = [Path(line).name for line in log.read_text().split()]
    assert calls == ["iptables-save", "ip6tables-save", "iptables-restore", "ip6tables-restore"]
    v4 = ns.rules("LIGHTD", 4)
    assert v4 == [rule(p) for p in range(10000, 15000)] + [
        rule(p, "udp", "10.0.0.5") for p in range(20000, 23000)
    ]
    assert ns.rules("LIGHTD", 6) == [rule(p) for p in range(1000, 2000)]

    log.write_text("")
    await counted.close(tcp[:4000] + udp[1000:])
    assert [Path(line).name for line in log.read_text().split()] == [
        "iptables-save",
        "iptables-restore",
    ]
    assert ns.rules("LIGHTD", 4) == [rule(p) for p in range(14000, 15000)] + [
        rule(p, "udp", "10.0.0.5") for p in range(20000, 21000)
    ]
    await fw.close(tcp + udp + six)
    assert ns.rules("LIGHTD", 4) == [] and ns.rules("LIGHTD", 6) == []
    assert jumps(ns, 4) == 1 and jumps(ns, 6) == 1


async def test_open_twice_keeps_one_rule(ns: NetNs, fw: IptablesFirewall) -> None:
    first = [Entry("0.0.0.0", 25565, "tcp"), Entry("10.0.0.5", 25566, "udp")]
    await fw.open(first)
    await fw.open(first)
    await fw.open([*first, Entry("0.0.0.0", 25567, "tcp"), first[0]])
    assert ns.rules("LIGHTD") == [rule(25565), rule(25566, "udp", "10.0.0.5"), rule(25567)]
    assert jumps(ns) == 1
    await fw.open([Entry("::", 1, "udp")])
    await fw.open([Entry("::", 1, "udp")])
    assert ns.rules("LIGHTD", 6) == [rule(1, "udp")] and jumps(ns, 6) == 1


async def test_close_of_absent_rules_does_not_fail(ns: NetNs, fw: IptablesFirewall) -> None:
    await fw.close([Entry("0.0.0.0", 1, "tcp")])  # no chain at all yet
    await fw.open([Entry("0.0.0.0", 2, "tcp"), Entry("0.0.0.0", 3, "tcp")])
    hand(ns, 4, "-D", "LIGHTD", "-p", "tcp", "--dport", "2", "-m", "comment",
         "--comment", "lightd", "-j", "ACCEPT")  # fmt: skip
    await fw.close([Entry("0.0.0.0", 2, "tcp"), Entry("0.0.0.0", 3, "tcp"), Entry("::1", 4, "udp")])
    assert ns.rules("LIGHTD") == [] and ns.rules("LIGHTD", 6) == []


# --- failures ---------------------------------------------------------------------------------


def poisoned_restore(tmp_path: Path, tool: str = "iptables-restore") -> Path:
    """A real iptables-restore fed our batch plus one bad line before COMMIT: the kernel must
    refuse the whole batch, valid rules included."""
    bad = "-A LIGHTD_NO_SUCH_CHAIN -j ACCEPT"
    return wrapper_dir(tmp_path, {tool: f"sed 's/^COMMIT$/{bad}\\nCOMMIT/' | {real(tool)} \"$@\"\n"})


async def test_failed_batch_leaves_the_chain_as_it_was(
    ns: NetNs, fw: IptablesFirewall, tmp_path: Path
) -> None:
    await fw.open([Entry("0.0.0.0", p, "tcp") for p in range(100, 110)])
    hand(ns, 4, "-A", "LIGHTD", "-s", "192.0.2.1", "-j", "DROP")
    before = ns.save(4)
    broken = IptablesFirewall(command_prefix=with_path(ns, poisoned_restore(tmp_path)))
    with pytest.raises(Unavailable, match="iptables-restore refused the batch") as caught:
        await broken.open([Entry("0.0.0.0", p, "udp") for p in range(1000, 3000)])
    assert "failed" in caught.value.message  # iptables-restore's own words are passed on
    assert ns.save(4) == before
    with pytest.raises(Unavailable):
        await broken.close([Entry("0.0.0.0", p, "tcp") for p in range(100, 105)])
    with pytest.raises(Unavailable):
        await broken.reconcile([])
    assert ns.save(4) == before
    assert broken.status()["last_error"].startswith("The firewall could not be changed")


async def test_failed_ipv6_half_puts_ipv4_back(ns: NetNs, fw: IptablesFirewall, tmp_path: Path) -> None:
    broken = IptablesFirewall(command_prefix=with_path(ns, poisoned_restore(tmp_path, "ip6tables-restore")))
    # From nothing: the IPv4 chain and jump that the batch created are removed again.
    empty4, empty6 = ns.save(4), ns.save(6)
    mixed = [Entry("0.0.0.0", p, "tcp") for p in range(1, 3001)] + [Entry("::", 5, "udp")]
    with pytest.raises(Unavailable, match="ip6tables-restore refused the batch"):
        await broken.open(mixed)
    assert ns.save(4) == empty4 and ns.save(6) == empty6

    # With rules already there (and a foreign one in the chain), exactly as before.
    await fw.open([Entry("0.0.0.0", 7, "tcp"), Entry("::", 7, "tcp")])
    hand(ns, 4, "-A", "LIGHTD", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
    before4, before6 = ns.save(4), ns.save(6)
    with pytest.raises(Unavailable):
        await broken.open(mixed)
    with pytest.raises(Unavailable):
        await broken.close([Entry("0.0.0.0", 7, "tcp"), Entry("::", 7, "tcp")])
    assert ns.save(4) == before4 and ns.save(6) == before6


async def test_a_failed_put_back_is_said_and_reconcile_mends_it(
    ns: NetNs, fw: IptablesFirewall, tmp_path: Path
) -> None:
    count = tmp_path / "count"
    once = (
        f"n=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) > {count}\n"
        f'if [ "$n" -ge 1 ]; then echo "forced failure" >&2; exit 1; fi\n'
        f'exec {real("iptables-restore")} "$@"\n'
    )
    folder = wrapper_dir(tmp_path, {"iptables-restore": once, "ip6tables-restore": "exit 1\n"})
    broken = IptablesFirewall(command_prefix=with_path(ns, folder))
    pool = [Entry("0.0.0.0", 1, "tcp"), Entry("::", 1, "tcp")]
    with pytest.raises(Unavailable, match="could not be put back, so they stay out of step"):
        await broken.open(pool)
    assert ns.rules("LIGHTD") == [rule(1)]  # the IPv4 half stayed, and lightd said so
    report = await fw.reconcile([])
    assert report["removed"] == 1 and ns.rules("LIGHTD") == []


async def test_a_cancelled_caller_never_leaves_a_batch_halfway(ns: NetNs, fw: IptablesFirewall) -> None:
    pool = [Entry("0.0.0.0", p, "tcp") for p in range(1, 20001)] + [Entry("::", 1, "udp")]
    task = asyncio.create_task(fw.open(pool))
    await asyncio.sleep(0.05)  # the batch has started: reading or restoring
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fw.open([Entry("0.0.0.0", 30000, "udp")])  # waits until the batch is done
    assert len(ns.rules("LIGHTD", 4)) == 20001 and ns.rules("LIGHTD", 6) == [rule(1, "udp")]

    blocker = asyncio.create_task(fw.open([Entry("0.0.0.0", 30001, "udp")]))
    waiting = asyncio.create_task(fw.close(pool))  # cancelled before it got the lock: no change
    await asyncio.sleep(0)
    assert fw._lock.locked()
    waiting.cancel()
    await blocker
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(ns.rules("LIGHTD", 4)) == 20002


async def test_missing_binaries_are_reported(ns: NetNs, tmp_path: Path) -> None:
    nothing = tmp_path / "empty"
    nothing.mkdir()
    fw = IptablesFirewall(command_prefix=with_path(ns, nothing, keep_path=False))
    with pytest.raises(Unavailable, match="iptables-save was not found"):
        await fw.open([Entry("0.0.0.0", 1, "tcp")])
    assert "not found" in fw.status()["last_error"]

    # Only the IPv4 tools: an IPv4-only pool still reconciles, IPv6 says why it is off.
    only4 = tmp_path / "only4"
    only4.mkdir()
    for tool in ("iptables-save", "iptables-restore"):
        (only4 / tool).symlink_to(real(tool))
    fw4 = IptablesFirewall(command_prefix=with_path(ns, only4, keep_path=False))
    report = await fw4.reconcile([Entry("0.0.0.0", 1, "tcp")])
    assert report["added"] == 1 and ns.rules("LIGHTD") == [rule(1)]
    assert "ip6tables-save was not found" in fw4.status()["ipv6"]
    with pytest.raises(Unavailable, match="ip6tables-save was not found"):
        await fw4.open([Entry("::", 1, "tcp")])


# --- reconcile and restart --------------------------------------------------------------------


def foreign_rules(ns: NetNs) -> list[str]:
    """Rules of others: in INPUT, in another chain, and one untagged in lightd's chain."""
    hand(ns, 4, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
    hand(ns, 4, "-A", "INPUT", "-p", "tcp", "--dport", "25565", "-j", "ACCEPT")  # the seed's way
    hand(ns, 4, "-N", "OTHER")
    hand(ns, 4, "-A", "OTHER", "-p", "tcp", "--dport", "25565", "-m", "comment",
         "--comment", "lightd", "-j", "ACCEPT")  # fmt: skip
    hand(ns, 4, "-A", "LIGHTD", "-s", "192.0.2.7", "-j", "DROP")
    return [
        "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
        "-A INPUT -p tcp -m tcp --dport 25565 -j ACCEPT",
        rule(25565, chain="OTHER"),
        "-A LIGHTD -s 192.0.2.7/32 -j DROP",
    ]


async def test_reconcile_after_hand_edits(ns: NetNs, fw: IptablesFirewall) -> None:
    pool = [Entry("0.0.0.0", p, "tcp") for p in range(25565, 25575)]
    pool += [Entry("10.0.0.5", 27015, "udp"), Entry("::", 27015, "udp"), Entry("::1", 9, "tcp")]
    await fw.open(pool)
    others = foreign_rules(ns)
    tagged = ["-m", "comment", "--comment", "lightd", "-j", "ACCEPT"]
    hand(ns, 4, "-D", "LIGHTD", "-p", "tcp", "--dport", "25566", *tagged)  # deleted
    hand(ns, 4, "-D", "LIGHTD", "-d", "10.0.0.5", "-p", "udp", "--dport", "27015", *tagged)
    hand(ns, 4, "-A", "LIGHTD", "-p", "tcp", "--dport", "25567", *tagged)  # duplicated
    hand(ns, 4, "-I", "LIGHTD", "1", "-p", "tcp", "--dport", "25567", *tagged)
    hand(ns, 4, "-A", "LIGHTD", "-p", "tcp", "--dport", "4000", *tagged)  # stale
    hand(ns, 4, "-A", "INPUT", "-j", "LIGHTD")  # a second jump
    hand(ns, 6, "-A", "LIGHTD", "-p", "udp", "--dport", "27015", *tagged)  # IPv6 duplicate
    hand(ns, 6, "-D", "INPUT", "-j", "LIGHTD")  # IPv6 jump gone

    report = await fw.reconcile(pool)
    assert report["added"] == 2 and report["removed"] == 4
    assert report["drift"] == [
        "INPUT jumped to LIGHTD 2 times instead of once",
        "duplicate rule for 0.0.0.0:25567/tcp",
        "duplicate rule for 0.0.0.0:25567/tcp",
        "stale rule for 0.0.0.0:4000/tcp (no such pool entry)",
        "missing rule for 0.0.0.0:25566/tcp",
        "missing rule for 10.0.0.5:27015/udp",
        "INPUT did not jump to LIGHTD",
        "duplicate rule for [::]:27015/udp",
    ]
    v4 = ns.save(4)
    for line in others:
        assert v4.count(line) == 1, line
    assert v4.count(JUMP) == 1 and jumps(ns, 6) == 1
    mine = [line for line in ns.rules("LIGHTD") if "--comment lightd" in line]
    assert sorted(mine) == sorted([rule(p) for p in range(25565, 25575)] + [rule(27015, "udp", "10.0.0.5")])
    assert sorted(ns.rules("LIGHTD", 6)) == sorted([rule(27015, "udp"), rule(9, "tcp", "::1")])
    assert fw.status()["drift"] == report["drift"] and fw.status()["rule_count"] == 13

    again = await fw.reconcile(pool)
    assert (again["added"], again["removed"], again["drift"]) == (0, 0, [])


async def test_reconcile_to_an_empty_pool_leaves_only_others(ns: NetNs, fw: IptablesFirewall) -> None:
    await fw.open([Entry("0.0.0.0", p, "udp") for p in range(1, 2001)])
    others = foreign_rules(ns)
    report = await fw.reconcile([])
    assert report["removed"] == 2000 and report["added"] == 0
    assert ns.rules("LIGHTD") == ["-A LIGHTD -s 192.0.2.7/32 -j DROP"]
    v4 = ns.save(4)
    assert all(v4.count(line) == 1 for line in others) and v4.count(JUMP) == 1


async def test_restart_leaves_exactly_one_rule_per_entry(ns: NetNs) -> None:
    pool = [Entry("0.0.0.0", p, "tcp") for p in range(30000, 33000)]
    pool += [Entry("192.0.2.10", 30000, "udp"), Entry("::", 30000, "tcp")]
    first = IptablesFirewall(command_prefix=ns.prefix)
    await first.reconcile(pool)
    await first.open(pool[:100])
    others = foreign_rules(ns)
    expected4 = [rule(p) for p in range(30000, 33000)] + [rule(30000, "udp", "192.0.2.10")]

    # A restart: a fresh instance knows nothing but what iptables-save shows.
    second = IptablesFirewall(command_prefix=ns.prefix)
    report = await second.reconcile(pool)
    assert (report["added"], report["removed"]) == (0, 0)
    mine = [line for line in ns.rules("LIGHTD") if "--comment lightd" in line]
    assert sorted(mine) == sorted(expected4)
    assert ns.rules("LIGHTD", 6) == [rule(30000)]
    assert jumps(ns, 4) == 1 and jumps(ns, 6) == 1
    assert second.status()["rule_count"] == len(pool)

    # The pool changed while lightd was down (and a crash left a duplicate behind).
    hand(ns, 4, "-A", "LIGHTD", "-p", "tcp", "--dport", "30001",
         "-m", "comment", "--comment", "lightd", "-j", "ACCEPT")  # fmt: skip
    changed = pool[1:] + [Entry("0.0.0.0", 40000, "udp")]
    third = IptablesFirewall(command_prefix=ns.prefix)
    report = await third.reconcile(changed)
    assert (report["added"], report["removed"]) == (1, 2)
    mine = [line for line in ns.rules("LIGHTD") if "--comment lightd" in line]
    assert sorted(mine) == sorted([*expected4[1:], rule(40000, "udp")])
    assert all(ns.save(4).count(line) == 1 for line in others)


async def test_status_and_teardown(ns: NetNs, fw: IptablesFirewall) -> None:
    await fw.open([Entry("0.0.0.0", 1, "tcp"), Entry("::", 1, "tcp")])
    status = fw.status()
    assert status["enabled"] is True and status["chain"] == "LIGHTD"
    assert status["backend"] in ("iptables-nft", "iptables-legacy")
    assert status["rule_count"] == 2 and status["rules"] == {"ipv4": 1, "ipv6": 1}
    hand(ns, 4, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
    assert (await fw.teardown()) == {"removed": 2}
    assert ns.save(4) == [
        ":INPUT ACCEPT [0:0]",
        ":FORWARD ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
    ]
    assert ":LIGHTD - [0:0]" not in ns.save(6)


async def test_custom_chain_name(ns: NetNs) -> None:
    fw = IptablesFirewall("GAME-PORTS", ns.prefix, insert_jump=True)
    hand(ns, 4, "-A", "INPUT", "-j", "REJECT")
    await fw.open([Entry("0.0.0.0", 25565, "tcp")])
    rules = ns.save(4)
    assert rules[-3:] == [
        "-A INPUT -j GAME-PORTS",
        "-A INPUT -j REJECT --reject-with icmp-port-unreachable",
        rule(25565, chain="GAME-PORTS"),
    ]
