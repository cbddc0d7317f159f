"""The repair loop's rules with in-memory fakes: what each pass finds, and that it changes nothing.

The real socket tables, iptables in a namespace and both engines are in
tests/e2e/test_repair_daemon.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightd.core.engine_view import ContainerInfo
from lightd.core.entry import Entry, Key
from lightd.errors import Unavailable
from lightd.service.containers import ContainerService, PortRequest
from lightd.service.pool_service import PoolService
from lightd.service.repair import RepairService
from lightd.service.repair_rules import FINDING_TYPES, Finding, IdleTracker, drift_finding, merge
from tests.fakes import FakeEngine, FakeFirewall, FakeHost, MemoryStore

TCP, UDP = "tcp", "udp"
PORTS = range(20001, 20006)


class Clock:
    """A clock a test moves: each pass starts a minute after the one before."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += 60


class DriftingFirewall(FakeFirewall):
    """A firewall whose next reconcile finds the drift a test names (as iptables reports it)."""

    def __init__(self) -> None:
        super().__init__()
        self.drift: list[str] = []
        self.reconciled: list[list[Key]] = []

    async def reconcile(self, entries: Sequence[Entry]) -> dict[str, Any]:
        report = await super().reconcile(entries)
        self.reconciled.append([e.key for e in entries])
        drift, self.drift = self.drift, []
        return {
            **report,
            "added": sum("missing" in d for d in drift),
            "removed": sum("missing" not in d for d in drift),
            "drift": drift,
            "drift_count": len(drift),
        }


class World:
    def __init__(self, idle_passes: int = 3) -> None:
        entries = [Entry("0.0.0.0", p, TCP) for p in PORTS] + [Entry("0.0.0.0", 20001, UDP)]
        entries.append(Entry("127.0.0.1", 20010, TCP))
        self.store = MemoryStore(entries)
        self.firewall = DriftingFirewall()
        self.pools = PoolService(self.store, self.firewall, host=None)
        self.engine = FakeEngine()
        self.containers = ContainerService(self.pools, self.engine)
        self.host = FakeHost()
        self.clock = Clock()
        self.counts: list[Mapping[str, int]] = []
        self.repair = RepairService(
            self.pools,
            self.containers,
            self.engine,
            self.host,
            interval=0,
            idle_passes=idle_passes,
            metrics=self.counts.append,
            clock=self.clock,
        )

    async def run(self) -> dict[str, Any]:
        self.clock.tick()
        return await self.repair.run()

    def entry(self, port: int, protocol: str = TCP, ip: str = "0.0.0.0") -> Entry:
        found = self.pools.lookup((ip, port, protocol))
        assert found is not None
        return found


@pytest.fixture
async def world():
    w = World()
    w.pools.load()
    await w.pools.start()
    yield w
    await w.repair.stop()
    await w.pools.stop()
    await w.containers.close()


def of_type(report: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["type"] == kind]


def entries_of(findings: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    return [(f["entry"]["ip"], f["entry"]["port"], f["entry"]["protocol"]) for f in findings]


def rows(store: MemoryStore) -> dict[Key, tuple[bool, str | None, str | None]]:
    return dict(store.rows)


# -- squatter ----------------------------------------------------------------------------------


async def test_a_free_entry_another_process_bound_is_a_squatter_until_it_is_let_go(world, caplog):
    caplog.set_level(logging.INFO, "lightd.service.repair")
    world.host.bound = {("0.0.0.0", 20002, TCP)}
    before = rows(world.store)
    first = await world.run()
    [squatter] = of_type(first, "squatter")
    assert squatter["entry"] == {"ip": "0.0.0.0", "port": 20002, "protocol": TCP}
    assert "another process on this host has it bound (0.0.0.0:20002/tcp LISTEN uid=0)" in squatter["message"]
    assert squatter["sockets"] == ["0.0.0.0:20002/tcp LISTEN uid=0"]
    # Asked once, over the pool's range only, with TIME_WAIT left out (no process holds that).
    assert world.host.snapshots == [(("tcp", "udp"), (20001, 20010), True)]

    second = await world.run()
    assert of_type(second, "squatter") == [{**squatter}], "the same finding, since its first pass"
    assert rows(world.store) == before and not world.entry(20002).in_use, "a finding frees nothing"
    logged = [r.getMessage() for r in caplog.records if "squatter" in r.getMessage()]
    assert len(logged) == 1 and "0.0.0.0:20002/tcp" in logged[0], "said once, not every pass"

    world.host.bound = set()
    assert of_type(await world.run(), "squatter") == []
    assert any("no longer a squatter: 0.0.0.0:20002/tcp" in r.getMessage() for r in caplog.records)
    world.host.bound = {("0.0.0.0", 20002, TCP)}
    again = of_type(await world.run(), "squatter")
    assert again and again[0]["since"] != squatter["since"], "back again: a new finding"


async def test_only_available_entries_can_be_squatted(world):
    # In use by the operator: its server may hold it. Blocked by a wildcard sibling in use
    # (127.0.0.1:20010 beside 0.0.0.0:20010): that sibling's server holds it.
    await world.pools.set_use("0.0.0.0", 20003, TCP, True)
    await world.pools.add("0.0.0.0", 20010, TCP)
    await world.pools.set_use("0.0.0.0", 20010, TCP, True)
    world.host.bound = {
        ("0.0.0.0", 20003, TCP),
        ("0.0.0.0", 20010, TCP),
        ("127.0.0.1", 20004, TCP),
        ("0.0.0.0", 20001, UDP),
    }
    report = await world.run()
    # 127.0.0.1:20004 clashes with the free 0.0.0.0:20004 (the wildcard holds every address).
    assert entries_of(of_type(report, "squatter")) == [("0.0.0.0", 20001, UDP), ("0.0.0.0", 20004, TCP)]


async def test_unreadable_socket_tables_keep_the_host_findings_and_say_why(world):
    world.host.bound = {("0.0.0.0", 20002, TCP)}
    first = await world.run()
    world.host.fail = PermissionError(13, "Permission denied")
    second = await world.run()
    assert "cannot read this host's socket tables" in second["errors"]["host"]
    assert of_type(second, "squatter") == of_type(first, "squatter"), "unknown is not resolved"
    world.host.fail = None
    world.host.bound = set()
    third = await world.run()
    assert third["errors"] == {} and of_type(third, "squatter") == []


# -- orphan ------------------------------------------------------------------------------------


async def test_entries_of_a_container_the_engine_lost_are_orphans_and_stay_held(world):
    created = await world.containers.create(
        "mc-1", "busybox", [PortRequest(TCP, "0.0.0.0", 20004), PortRequest(UDP, "0.0.0.0", 20001)]
    )
    await world.containers.create("mc-2", "busybox", [PortRequest(TCP, "0.0.0.0", 20005)])
    assert of_type(await world.run(), "orphan") == []
    del world.engine.containers[created.engine_id]  # behind lightd's back
    report = await world.run()
    orphans = of_type(report, "orphan")
    assert entries_of(orphans) == [("0.0.0.0", 20001, UDP), ("0.0.0.0", 20004, TCP)]
    assert {f["container"] for f in orphans} == {"mc-1"}
    assert "held by container mc-1, which the engine no longer has" in orphans[0]["message"]
    assert world.entry(20004).container == "mc-1" and world.entry(20001, UDP).container == "mc-1"
    assert world.containers.get("mc-1").state == "running", "the container service's own state"

    await world.containers.delete("mc-1")
    assert of_type(await world.run(), "orphan") == [], "deleted: its ports are free, no orphan"


async def test_an_engine_that_cannot_be_asked_keeps_the_orphans_known(world):
    created = await world.containers.create("mc-1", "busybox", [PortRequest(TCP, "0.0.0.0", 20004)])
    del world.engine.containers[created.engine_id]
    first = of_type(await world.run(), "orphan")
    world.engine.fail_next("list_managed", Unavailable("the engine is not answering"))
    report = await world.run()
    assert report["errors"] == {"engine": "cannot list the engine's containers: the engine is not answering"}
    assert of_type(report, "orphan") == first


async def test_the_bookkeeping_engine_has_no_orphans(world):
    await world.containers.create("mc-1", "busybox", [PortRequest(TCP, "0.0.0.0", 20004)])
    world.engine.kind = "none"
    world.engine.containers.clear()
    world.engine.fail_next("list_managed")  # never asked
    report = await world.run()
    assert of_type(report, "orphan") == [] and report["errors"] == {}
    assert world.engine.failed == []


class StaleListEngine(FakeEngine):
    """``list_managed`` answers what it saw when called, but only once the test lets it."""

    def __init__(self) -> None:
        super().__init__()
        self.listing = threading.Event()
        self.go_on = threading.Event()

    def list_managed(self) -> list[ContainerInfo]:
        seen = super().list_managed()
        self.listing.set()
        self.go_on.wait(timeout=10)
        return seen


async def test_a_container_rebound_while_the_engine_was_listed_is_no_orphan():
    w = World()
    w.engine = StaleListEngine()
    w.containers = ContainerService(w.pools, w.engine)
    w.repair = RepairService(w.pools, w.containers, w.engine, w.host, interval=0, clock=w.clock)
    w.pools.load()
    await w.pools.start()
    try:
        await w.containers.create("mc-1", "busybox", [PortRequest(TCP, "0.0.0.0", 20004)])
        running = asyncio.ensure_future(w.repair.run())
        await asyncio.to_thread(w.engine.listing.wait, 10)
        # The engine's answer names the old container; the rebind replaces it meanwhile.
        await w.containers.rebind("mc-1", [PortRequest(TCP, "0.0.0.0", 20005)])
        w.engine.go_on.set()
        report = await running
        assert of_type(report, "orphan") == []
        assert of_type(await w.repair.run(), "orphan") == [], "the next pass sees the new one"
    finally:
        w.engine.go_on.set()
        await w.repair.stop()
        await w.pools.stop()
        await w.containers.close()


# -- idle --------------------------------------------------------------------------------------


async def test_a_port_marked_by_hand_with_nothing_bound_is_idle_after_n_passes(world, caplog):
    caplog.set_level(logging.INFO, "lightd.service.repair")
    await world.pools.set_use("0.0.0.0", 20003, TCP, True)
    await world.pools.set_use("0.0.0.0", 20004, TCP, True)
    world.host.bound = {("0.0.0.0", 20004, TCP)}  # its server runs
    first_pass = world.clock.now + 60
    assert of_type(await world.run(), "idle") == []
    assert of_type(await world.run(), "idle") == []
    [idle] = of_type(await world.run(), "idle")  # idle_passes is 3
    assert idle["entry"]["port"] == 20003 and idle["passes"] == 3
    assert "nothing on this host has had it bound for 3 passes in a row" in idle["message"]
    assert idle["since"] == _stamp(first_pass), "since the first pass that found nothing bound"
    assert world.entry(20003).in_use, "reported only: a stopped server keeps its port"
    [later] = of_type(await world.run(), "idle")
    assert later["passes"] == 4 and later["since"] == idle["since"]
    assert len([r for r in caplog.records if "idle" in r.getMessage()]) == 1

    world.host.bound.add(("0.0.0.0", 20003, TCP))  # started again
    assert of_type(await world.run(), "idle") == []
    world.host.bound = set()
    await world.pools.set_use("0.0.0.0", 20004, TCP, False)
    for _ in range(2):
        assert of_type(await world.run(), "idle") == [], "counting starts again from one"
    assert entries_of(of_type(await world.run(), "idle")) == [("0.0.0.0", 20003, TCP)]


async def test_ports_held_by_a_container_are_never_idle(world):
    await world.containers.create("mc-1", "busybox", [PortRequest(TCP, "0.0.0.0", 20004)])
    for _ in range(4):
        report = await world.run()
    assert of_type(report, "idle") == [] and of_type(report, "orphan") == []


def _stamp(when: float) -> str:
    from lightd.service.repair_rules import stamp

    return stamp(when)


# Passes as the tracker sees them: per pass, which of three entries were checked and bound.
_PASS = st.dictionaries(st.sampled_from([("0.0.0.0", p, TCP) for p in (1, 2, 3)]), st.booleans())


@settings(max_examples=200, deadline=None)
@given(passes=st.lists(_PASS, max_size=25), needed=st.integers(1, 5))
def test_idle_means_n_checked_passes_in_a_row_with_nothing_bound(passes, needed):
    tracker = IdleTracker(needed)
    history: dict[Key, list[tuple[int, bool]]] = {}
    for number, checked in enumerate(passes):
        idle = tracker.observe(checked, float(number))
        for key in {k for p in passes for k in p}:
            history.setdefault(key, []).append((number, checked.get(key, True)))
        for key, runs in history.items():
            # Passes in a row, back from this one, that checked the key and found nothing bound.
            streak = 0
            for _, bound in reversed(runs):
                if bound:
                    break
                streak += 1
            if streak >= needed:
                assert idle[key] == (streak, float(number - streak + 1))
            else:
                assert key not in idle
            assert tracker.streak(key) == streak


def test_idle_passes_must_be_at_least_one():
    with pytest.raises(ValueError, match="at least 1"):
        IdleTracker(0)


# -- firewall drift ----------------------------------------------------------------------------


async def test_firewall_drift_is_repaired_at_once_and_reported_with_what_was_done(world, caplog):
    caplog.set_level(logging.WARNING, "lightd.service.repair")
    world.firewall.drift = [
        "missing rule for 0.0.0.0:20002/tcp",
        "duplicate rule for [::]:19132/udp",
        "INPUT did not jump to LIGHTD",
    ]
    report = await world.run()
    drift = of_type(report, "firewall_drift")
    assert [(f["entry"], f["drift"], f["repaired"]) for f in drift] == [
        ({"ip": "0.0.0.0", "port": 20002, "protocol": TCP}, "missing rule for 0.0.0.0:20002/tcp", True),
        ({"ip": "::", "port": 19132, "protocol": UDP}, "duplicate rule for [::]:19132/udp", True),
        (None, "INPUT did not jump to LIGHTD", True),
    ]
    expected = "Firewall drift: missing rule for 0.0.0.0:20002/tcp; repaired at once"
    assert drift[0]["message"].startswith(expected)
    assert report["firewall"] == {"added": 1, "removed": 2, "drift_count": 3}
    assert len([r for r in caplog.records if "firewall_drift" in r.getMessage()]) == 3
    assert world.firewall.reconciled[-1] == [e.key for e in world.pools.pool.entries()]
    assert of_type(await world.run(), "firewall_drift") == [], "repaired: gone the next pass"


async def test_a_failing_firewall_is_an_error_of_the_pass_not_a_finding(world):
    world.firewall.fail_next("reconcile")
    report = await world.run()
    assert report["errors"] == {"firewall": "iptables-restore failed: test failure of reconcile"}
    assert report["firewall"] is None and of_type(report, "firewall_drift") == []


class GatedFirewall(DriftingFirewall):
    """As iptables does, one batch at a time: an open under way holds the others back."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = asyncio.Lock()
        self.gate = asyncio.Event()

    async def open(self, entries: Sequence[Entry]) -> None:
        async with self.lock:
            await self.gate.wait()
            self.open_keys.update(e.key for e in entries)

    async def reconcile(self, entries: Sequence[Entry]) -> dict[str, Any]:
        async with self.lock:
            return await super().reconcile(entries)


async def test_a_pass_during_an_add_leaves_the_new_rule_in_place():
    w = World()
    w.firewall = GatedFirewall()
    w.pools = PoolService(w.store, w.firewall, host=None)
    w.containers = ContainerService(w.pools, w.engine)
    w.repair = RepairService(w.pools, w.containers, w.engine, w.host, interval=0, clock=w.clock)
    w.pools.load()
    await w.pools.start()
    try:
        await w.pools.reconcile_firewall()
        adding = asyncio.ensure_future(w.pools.add("0.0.0.0", 20020, TCP))
        for _ in range(5):
            await asyncio.sleep(0)
        passing = asyncio.ensure_future(w.repair.run())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not passing.done(), "the pass waits for the rule being opened"
        w.firewall.gate.set()
        await adding
        await passing
        assert ("0.0.0.0", 20020, TCP) in w.firewall.open_keys
        assert ("0.0.0.0", 20020, TCP) in w.firewall.reconciled[-1]
    finally:
        w.firewall.gate.set()
        await w.repair.stop()
        await w.pools.stop()
        await w.containers.close()


def test_drift_words_name_the_entry_when_they_name_a_rule():
    cases = {
        "missing rule for 10.0.0.5:27015/udp": ("10.0.0.5", 27015, UDP),
        "stale rule for [2001:db8::1]:25565/tcp (no such pool entry)": ("2001:db8::1", 25565, TCP),
        "duplicate rule for [::]:1/tcp": ("::", 1, TCP),
        "chain LIGHTD was missing": None,
        "unrecognised rule with lightd's tag: -p tcp -j ACCEPT": None,
        "missing rule for 0.0.0.0:70000/tcp": None,
        "missing rule for nonsense": None,
        "... and 12 more": None,
    }
    for text, key in cases.items():
        assert drift_finding(text, 0.0, 1, 0).key == key, text


# -- one pass at a time, the loop, shutdown -----------------------------------------------------


class SlowHost(FakeHost):
    """Socket tables that take until the test says so to read (in the repair's thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = threading.Event()
        self.go_on = threading.Event()

    def snapshot(self, protocols, *, ports=None, ignore_time_wait=False):
        self.reading.set()
        self.go_on.wait(timeout=10)
        return super().snapshot(protocols, ports=ports, ignore_time_wait=ignore_time_wait)


async def test_a_pass_asked_for_during_one_shares_it_and_the_loop_keeps_turning(world):
    world.repair.host = slow = SlowHost()
    first = asyncio.ensure_future(world.repair.run())
    await asyncio.to_thread(slow.reading.wait, 10)
    ticks = 0
    for _ in range(20):  # the event loop runs while the tables are read in a thread
        await asyncio.sleep(0)
        ticks += 1
    second = asyncio.ensure_future(world.repair.run())
    assert world.repair.status()["running"] is True
    slow.go_on.set()
    one, two = await asyncio.gather(first, second)
    assert one is two and world.repair.passes == 1 and len(slow.snapshots) == 1
    assert ticks == 20 and world.repair.status()["running"] is False


async def test_a_caller_that_gives_up_does_not_cancel_the_shared_pass(world):
    world.repair.host = slow = SlowHost()
    caller = asyncio.ensure_future(world.repair.run())
    await asyncio.to_thread(slow.reading.wait, 10)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    slow.go_on.set()
    report = await world.repair.run()  # joins the pass still under way
    assert world.repair.passes == 1 and report["last_run"]


async def test_stop_ends_the_loop_and_a_pass_under_way():
    w = World()
    w.pools.load()
    await w.pools.start()
    slow = SlowHost()
    w.repair = RepairService(w.pools, w.containers, w.engine, slow, interval=0.001, clock=w.clock)
    w.repair.start()
    try:
        await asyncio.to_thread(slow.reading.wait, 10)  # the loop's first pass reads the host
        waiting = asyncio.ensure_future(w.repair.run())
        await asyncio.sleep(0)
        await w.repair.stop()
        with pytest.raises(Unavailable, match="stopping"):
            await waiting
        with pytest.raises(Unavailable, match="stopping"):
            await w.repair.run()
        assert w.repair.passes == 0
    finally:
        slow.go_on.set()
        await w.pools.stop()
        await w.containers.close()


async def test_the_loop_runs_passes_by_itself_and_feeds_the_metrics():
    w = World()
    w.pools.load()
    await w.pools.start()
    w.host.bound = {("0.0.0.0", 20002, TCP)}
    w.repair = RepairService(w.pools, w.containers, w.engine, w.host, interval=0.001, metrics=w.counts.append)
    w.repair.start()
    try:
        for _ in range(2000):
            if w.repair.passes >= 2:
                break
            await asyncio.sleep(0.005)
        assert w.repair.passes >= 2
        assert w.counts[-1] == {"squatter": 1, "orphan": 0, "idle": 0, "firewall_drift": 0}
        status = w.repair.status()
        assert status["interval"] == 0.001 and status["last_run"] and len(status["findings"]) == 1
    finally:
        await w.repair.stop()
        await w.pools.stop()
        await w.containers.close()


async def test_interval_zero_runs_no_loop_but_a_pass_on_demand(world):
    world.repair.start()
    await asyncio.sleep(0.01)
    assert world.repair.passes == 0 and world.repair.status()["last_run"] is None
    await world.repair.run()
    assert world.repair.passes == 1 and world.counts == [dict.fromkeys(FINDING_TYPES, 0)]


class Sink:
    def __init__(self) -> None:
        self.seen: list[dict[str, int]] = []

    def repair_findings(self, counts: Mapping[str, int]) -> None:
        self.seen.append(dict(counts))


async def test_a_metrics_object_gets_the_counts_of_every_pass(world):
    sink = Sink()
    world.repair = RepairService(
        world.pools, world.containers, world.engine, world.host, interval=0, metrics=sink
    )
    world.host.bound = {("0.0.0.0", 20002, TCP), ("0.0.0.0", 20003, TCP)}
    await world.repair.run()
    assert sink.seen == [{"squatter": 2, "orphan": 0, "idle": 0, "firewall_drift": 0}]


async def test_a_large_pool_is_looked_at_in_slices():
    store = MemoryStore([Entry("0.0.0.0", p, TCP) for p in range(1, 30001)])
    pools = PoolService(store, host=None)
    engine = FakeEngine()
    containers = ContainerService(pools, engine)
    host = FakeHost([("0.0.0.0", p, TCP) for p in range(1, 30001, 1000)])
    repair = RepairService(pools, containers, engine, host, interval=0)
    pools.load()
    await pools.start()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    counting = asyncio.ensure_future(ticker())
    try:
        await asyncio.sleep(0)
        start = ticks
        report = await repair.run()
        assert len(of_type(report, "squatter")) == 30
        assert ticks - start >= 10, "other tasks ran between slices of the pass"
    finally:
        counting.cancel()
        await repair.stop()
        await pools.stop()
        await containers.close()


def test_a_negative_or_nan_interval_is_refused():
    w = World()
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="repair interval"):
            RepairService(w.pools, w.containers, w.engine, w.host, interval=bad)


def test_merge_keeps_first_seen_times_and_what_could_not_be_checked():
    old = Finding("squatter", "squatter a", ("0.0.0.0", 1, TCP), "m", 10.0)
    gone = Finding("idle", "idle b", ("0.0.0.0", 2, TCP), "m", 10.0)
    orphan = Finding("orphan", "orphan c", ("0.0.0.0", 3, TCP), "m", 10.0)
    previous = {f.ident: f for f in (old, gone, orphan)}
    again = Finding("squatter", "squatter a", ("0.0.0.0", 1, TCP), "m2", 20.0)
    new = Finding("firewall_drift", "firewall_drift x", None, "m", 20.0)
    merged = merge(previous, [again, new, Finding("orphan", "orphan d", None, "m", 20.0)], ["orphan"])
    assert [(f.ident, f.since, f.message) for f in merged.findings] == [
        ("squatter a", 10.0, "m2"),
        ("orphan c", 10.0, "m"),
        ("firewall_drift x", 20.0, "m"),
    ]
    assert [f.ident for f in merged.new] == ["firewall_drift x"]
    assert [f.ident for f in merged.gone] == ["idle b"]
