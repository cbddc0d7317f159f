"""Claims whatever they ask (issue 10, point 5): choose() is exact and bounded, big claims slice.

Property-based: on random pools (wildcards and specific ips, some entries in use, some refused by
``reject``), choose() returns exactly ``count`` distinct available numbers or None, None exactly
when no answer exists, changes nothing either way, and asks about each candidate at most once. The
pool's counts (entries per protocol, tcp+udp pairs) and free-port maps stay equal to the truth
through any sequence of changes. Then PoolService: a claim sliced over many turns of the event
loop is atomic for readers and other claims, and a failing one gives back all it took.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightd.core import holders
from lightd.core.choose import Picker, Restart, choose
from lightd.core.entry import Entry
from lightd.core.pool import Pool
from lightd.errors import NoAvailablePorts, StorageError
from lightd.service.pool_service import PoolService
from tests.fakes import MemoryStore

try:  # absent before claims were sliced: the tests below then use claims big enough anyway
    from lightd.service import claims
except ImportError:  # pragma: no cover - only on the old code
    claims = None

IPS = ("0.0.0.0", "10.0.0.1", "10.0.0.2", "::")
PROTOCOLS = [("tcp",), ("udp",), ("tcp", "udp")]
PORTS = range(1, 25)

entry_specs = st.lists(
    st.tuples(st.sampled_from(IPS), st.sampled_from(PORTS), st.sampled_from(("tcp", "udp")), st.booleans()),
    max_size=80,
    unique_by=lambda spec: spec[:3],
)


def make_pool(specs) -> Pool:
    return Pool(Entry(ip, port, protocol, in_use=used) for ip, port, protocol, used in specs)


def state(pool: Pool):
    return {e.key: (e.in_use, e.container, e.note, pool.is_available(e)) for e in pool.entries()}


def host_like(refused):
    """``reject`` as the host check decides: a port bound on a specific ip is bound for the
    wildcard of its family too (a wildcard entry clashes with a socket on any address)."""
    refused_slots = {Entry(*key).slot for key in refused}

    def reject(entry):
        return entry.key in refused or (entry.wildcard and entry.slot in refused_slots)

    return reject


def usable(pool, ip, port, protocols, reject):
    item = [pool.get((ip, port, p)) for p in protocols]
    return all(e is not None and pool.is_available(e) and not reject(e) for e in item)


def good_numbers(pool, protocols, ip, reject):
    """Every ip:port that an answer limited to one ip may use."""
    return {
        (e.ip, e.port)
        for e in pool.entries()
        if ip in (None, e.ip) and usable(pool, e.ip, e.port, protocols, reject)
    }


def most_numbers(pool, protocols, reject):
    """The most numbers one claim over every ip can take without two of them conflicting: per
    port and family, the wildcard's number or every specific ip's, whichever is more."""
    best = 0
    for family, port in {(e.family, e.port) for e in pool.entries()}:
        wildcard = "0.0.0.0" if family == 4 else "::"
        ips = {e.ip for e in pool.entries() if e.family == family and e.port == port}
        specific = sum(usable(pool, i, port, protocols, reject) for i in ips if i != wildcard)
        best += max(specific, int(usable(pool, wildcard, port, protocols, reject)))
    return best


def has_run(numbers, count):
    return any(all((ip, port + k) in numbers for k in range(count)) for ip, port in numbers)


def possible(pool, count, protocols, ip, contiguous, reject):
    if contiguous:
        return has_run(good_numbers(pool, protocols, ip, reject), count)
    if ip is not None:
        return len(good_numbers(pool, protocols, ip, reject)) >= count
    return most_numbers(pool, protocols, reject) >= count


def assert_no_conflicts(entries):
    by_slot: dict = {}
    for entry in entries:
        by_slot.setdefault(entry.slot, []).append(entry)
    for members in by_slot.values():
        assert len(members) == 1 or not any(m.wildcard for m in members), members


@settings(max_examples=300, deadline=None)
@given(
    specs=entry_specs,
    count=st.integers(1, 30),
    protocols=st.sampled_from(PROTOCOLS),
    ip=st.sampled_from((None, *IPS)),
    contiguous=st.booleans(),
    refused_share=st.sampled_from((0.0, 0.3, 0.9)),
    seed=st.integers(0, 2**32),
)
def test_choose_returns_exactly_count_distinct_available_numbers_or_none_and_changes_nothing(
    specs, count, protocols, ip, contiguous, refused_share, seed
):
    pool = make_pool(specs)
    rng = random.Random(seed)
    refused = {key for key in sorted(e.key for e in pool.entries()) if rng.random() < refused_share}
    refuses = host_like(refused)
    asked: Counter = Counter()

    def reject(entry):
        asked[entry.key] += 1
        return refuses(entry)

    before = state(pool)
    expected = possible(pool, count, protocols, ip, contiguous, refuses)

    chosen = choose(pool, rng, count, protocols, ip, contiguous, reject if refused_share else None)

    assert state(pool) == before, "choose() changed the pool"
    assert (chosen is not None) == expected
    if chosen is None:
        return
    assert len(chosen) == count
    for item in chosen:
        assert [e.protocol for e in item] == list(protocols)
        assert len({(e.ip, e.port) for e in item}) == 1, "one number per item"
        assert all(pool.is_available(e) and not refuses(e) for e in item)
        assert ip is None or item[0].ip == ip
    flat = [e.key for item in chosen for e in item]
    assert len(set(flat)) == len(flat), "an entry chosen twice"
    assert_no_conflicts([e for item in chosen for e in item])
    if contiguous:
        ports = [item[0].port for item in chosen]
        assert ports == list(range(ports[0], ports[0] + count))
        assert len({item[0].ip for item in chosen}) == 1
    # Drawing without replacement: no candidate is asked about twice (no rescans, no retries).
    # A run is asked about once more when a refused number broke the run tried before it.
    if not contiguous:
        assert max(asked.values(), default=0) <= 1


def test_choosing_most_of_a_big_pool_asks_about_each_candidate_once():
    """65,535 entries, 60,000 wanted: one question per entry drawn, not one per retry."""
    pool = Pool(Entry("0.0.0.0", port, "tcp") for port in range(1, 65536))
    asked: Counter = Counter()

    def reject(entry):
        asked[entry.key] += 1
        return entry.port % 1000 == 0  # 65 of them are bound on the host

    chosen = choose(pool, random.Random(7), 60_000, ("tcp",), reject=reject)
    assert chosen is not None and len(chosen) == 60_000
    assert max(asked.values()) == 1
    assert sum(asked.values()) < 60_100
    # And all of what is left is not enough for one more than there is.
    assert choose(pool, random.Random(7), 65_536 - 65, ("tcp",), reject=reject) is None


def test_an_impossible_claim_is_refused_by_the_counts_before_anything_is_drawn():
    pool = Pool(Entry("0.0.0.0", port, protocol) for protocol in ("tcp", "udp") for port in range(1, 65536))
    holders.take(pool, pool.get(("0.0.0.0", 30000, "udp")), holders.OPERATOR)
    asked = []
    for count, protocols in ((65535, ("tcp", "udp")), (65535, ("udp",)), (65536, ("tcp",))):
        assert choose(pool, random.Random(1), count, protocols, reject=asked.append) is None
    assert (
        choose(pool, random.Random(1), 40000, ("tcp", "udp"), contiguous=True, reject=asked.append) is None
    )  # 30000/udp leaves runs of 29,999 and 35,535
    assert asked == [], "candidates were drawn for a claim the counts could refuse"


def test_a_claim_over_every_ip_never_takes_a_wildcard_and_a_specific_ip_of_one_number():
    # 0.0.0.0 and 10.0.0.1 on ports 1-3: the kernel binds 0.0.0.0:1 or 10.0.0.1:1, not both. So
    # three numbers can be had (10.0.0.1 on each port frees nothing else), and four cannot.
    pool = Pool(Entry(ip, port, "tcp") for ip in ("0.0.0.0", "10.0.0.1") for port in (1, 2, 3))
    for seed in range(50):
        chosen = choose(pool, random.Random(seed), 3, ("tcp",))
        assert chosen is not None
        assert sorted(item[0].key for item in chosen) == [("10.0.0.1", p, "tcp") for p in (1, 2, 3)]
        assert choose(pool, random.Random(seed), 4, ("tcp",)) is None


async def test_a_claimed_wildcard_and_specific_ip_of_one_number_are_never_both_in_use(make_service):
    entries = [
        Entry(ip, port, proto)
        for ip in ("0.0.0.0", "10.0.0.1")
        for port in range(1, 41)
        for proto in ("tcp", "udp")
    ]
    service, store = await make_service(entries)
    claimed = await service.claim(40, ("tcp", "udp"))
    assert {e.ip for e in claimed} == {"10.0.0.1"}
    with pytest.raises(NoAvailablePorts):
        await service.claim(1, ("tcp", "udp"))
    assert_no_conflicts([e for e in service.pool.entries() if e.in_use])


# -- the pool's counts and maps ------------------------------------------------------------------

operations = st.lists(
    st.tuples(
        st.sampled_from(("take", "free", "add", "remove")),
        st.sampled_from(IPS),
        st.sampled_from(PORTS[:10]),
        st.sampled_from(("tcp", "udp")),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(specs=entry_specs, ops=operations, map_first=st.booleans())
def test_counts_and_free_maps_follow_every_change(specs, ops, map_first):
    pool = make_pool(specs)
    if map_first:  # a map built before the changes must be kept in step by them
        for ip in IPS:
            pool.free_map(ip, "tcp")
    for op, ip, port, protocol in ops:
        entry = pool.get((ip, port, protocol))
        if op == "add" and entry is None:
            pool.add(Entry(ip, port, protocol))
        elif op == "remove" and entry is not None:
            pool.remove(entry.key)
        elif op == "take" and entry is not None and not entry.in_use and not pool.blockers(entry):
            holders.take(pool, entry, holders.OPERATOR)
        elif op == "free" and entry is not None and entry.in_use:
            holders.release(pool, entry, holders.OPERATOR)
    available = [e for e in pool.entries() if pool.is_available(e)]
    assert pool.shares_slots == (len({e.slot for e in pool.entries()}) < len(pool))
    for ip in (None, *IPS):
        for protocol in ("tcp", "udp"):
            expected = [e for e in available if e.protocol == protocol and ip in (None, e.ip)]
            assert pool.available_count(protocol, ip) == len(expected)
            assert len(pool.candidates(protocol, ip)) == len(expected)
        pairs = good_numbers(pool, ("tcp", "udp"), ip, lambda e: False)
        assert pool.pair_count(ip) == len(pairs)
    for ip in IPS:
        for protocol in ("tcp", "udp"):
            free = pool.free_map(ip, protocol)
            expected_ports = {e.port for e in available if e.ip == ip and e.protocol == protocol}
            assert {port for port in PORTS if free[port]} == expected_ports
            assert free.count(1) == len(expected_ports)
        pairs = good_numbers(pool, ("tcp", "udp"), ip, lambda e: False)
        for port in PORTS:
            assert pool.is_pair(ip, port) == ((ip, port) in pairs)


# -- the picker, step by step, taking what each step gives -----------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=entry_specs,
    count=st.integers(1, 30),
    protocols=st.sampled_from(PROTOCOLS),
    contiguous=st.booleans(),
    budget=st.integers(1, 8),
    seed=st.integers(0, 2**32),
)
def test_a_picker_stepping_with_takes_in_between_ends_with_count_distinct_numbers_or_none(
    specs, count, protocols, contiguous, budget, seed
):
    pool = make_pool(specs)
    rng = random.Random(seed)
    reject = host_like({e.key for e in pool.entries() if rng.random() < 0.2})
    expected = possible(pool, count, protocols, None, contiguous, reject)
    before = state(pool)
    picker = Picker(pool, rng, count, protocols, contiguous=contiguous, reject=reject)
    taken: list[list[Entry]] = []
    outcome = None
    for _ in range(10_000):
        if not picker.wanted:
            outcome = "done"
            break
        try:
            items = picker.step(budget)
        except Restart:
            for item in taken:
                for entry in item:
                    holders.release(pool, entry, holders.OPERATOR)
            taken = []
            continue
        if items is None:
            outcome = "none"
            break
        for item in items:
            for entry in item:
                holders.take(pool, entry, holders.OPERATOR)  # refused if not available
            taken.append(item)
    assert outcome == ("done" if expected else "none")
    if outcome == "none":
        for item in taken:
            for entry in item:
                holders.release(pool, entry, holders.OPERATOR)
        assert state(pool) == before
        return
    assert len(taken) == count
    flat = [e.key for item in taken for e in item]
    assert len(set(flat)) == len(flat)
    assert not any(reject(e) for item in taken for e in item)
    if contiguous:
        ports = [item[0].port for item in taken]
        assert ports == list(range(ports[0], ports[0] + count))


def test_a_contiguous_run_is_chosen_uniformly_among_all_its_starts():
    # Runs 1-3 (1 start of 3) and 10-14 on another ip (3 starts): 4 starts in all.
    pool = Pool(
        [Entry("10.0.0.1", p, "tcp") for p in (1, 2, 3)]
        + [Entry("10.0.0.2", p, "tcp") for p in range(10, 15)]
    )
    rng = random.Random(3)
    seen = Counter()
    for _ in range(400):
        chosen = choose(pool, rng, 3, ("tcp",), contiguous=True)
        assert chosen is not None
        seen[(chosen[0][0].ip, chosen[0][0].port)] += 1
    assert set(seen) == {("10.0.0.1", 1), ("10.0.0.2", 10), ("10.0.0.2", 11), ("10.0.0.2", 12)}
    assert min(seen.values()) > 60  # about 100 each


# -- PoolService: big claims in slices ------------------------------------------------------------


class BoundHost:
    """A host on which some ports are bound by other processes (the host check refuses them)."""

    def __init__(self, bound: set[tuple[int, str]]) -> None:
        self.bound = bound

    def snapshot(self, protocols, *, ports=None):
        return self

    def is_bound(self, ip: str, port: int, protocol: str) -> bool:
        return (port, protocol) in self.bound

    def is_local_address(self, ip: str) -> bool:
        return True


@pytest.fixture
def sliced(monkeypatch):
    """Every claim yields to the loop after each few draws, however fast the machine."""
    if claims is not None:
        monkeypatch.setattr(claims, "SLICE_SECONDS", 0.0)
        monkeypatch.setattr(claims, "STEP_DRAWS", 16)


@pytest.fixture
async def make_service():
    started = []

    async def make(entries, host=None):
        store = MemoryStore(entries)
        service = PoolService(store, host=host, host_check=host is not None)
        service.load()
        await service.start()
        started.append(service)
        return service, store

    yield make
    for service in started:
        await service.stop()


async def watch(service, claim_task, seen, reads):
    """Until the claim ends: what the pool's own index holds at every turn of the loop
    (internal: it shows the claim half done), and what readers see meanwhile."""

    async def sample():
        while not claim_task.done():
            seen.add(service.pool.available_count())
            await asyncio.sleep(0)

    async def read():
        while not claim_task.done():
            listed, total = await service.entries(in_use=True)
            reads.append(total)
            await asyncio.sleep(0)

    await asyncio.gather(sample(), read())


async def test_a_big_claim_runs_in_slices_and_readers_see_it_whole_or_not_at_all(make_service, sliced):
    entries = [Entry("0.0.0.0", port, "tcp") for port in range(1, 20_001)]
    service, store = await make_service(entries)
    claim = asyncio.create_task(service.claim(15_000, note="big"))
    seen: set[int] = set()
    reads: list[int] = []
    small: list[list[Entry]] = []

    async def small_claims():
        while not claim.done():
            small.append(await service.claim(1))
            await asyncio.sleep(0)

    await asyncio.gather(watch(service, claim, seen, reads), small_claims(), claim)
    big = claim.result()
    assert len(big) == 15_000
    # The loop ran while the claim was half done (it sliced)...
    assert any(5_000 < count < 20_000 for count in seen), sorted(seen)[:5]
    # ... and yet no reader saw it half done: none of it, or all of it (plus small claims).
    assert reads and all(total < 100 or total >= 15_000 for total in reads), reads
    small_keys = {e.key for batch in small for e in batch}
    assert not small_keys & {e.key for e in big}, "a port handed out twice"
    assert all(store.rows[e.key] == (True, None, "big", None) for e in big)


async def test_a_big_claim_that_fails_midway_gives_back_all_it_took(make_service, sliced):
    # 12,000 tcp ports, the odd ones bound on the host: the counts allow a claim of 8,000, but
    # only 6,000 can be had, which the claim finds out after taking thousands.
    bound = {(port, "tcp") for port in range(1, 12_001, 2)}
    entries = [Entry("0.0.0.0", port, "tcp", note="kept") for port in range(1, 12_001)]
    service, store = await make_service(entries, host=BoundHost(bound))
    rows_before = dict(store.rows)
    claim = asyncio.create_task(service.claim(8_000, note="big"))
    seen: set[int] = set()
    reads: list[int] = []
    waiting = asyncio.create_task(service.claim(1))  # a small claim, sent meanwhile
    await asyncio.gather(watch(service, claim, seen, reads), waiting, claim, return_exceptions=True)
    with pytest.raises(NoAvailablePorts):
        claim.result()
    assert any(seen) and min(seen) < 12_000 - 1_000, "the claim took nothing before failing"
    assert all(total <= 1 for total in reads), "a reader saw the failing claim's entries"
    [small] = waiting.result()
    assert small.port % 2 == 0
    expected = dict(rows_before)
    expected[small.key] = (True, None, "kept", None)
    assert store.rows == expected, "the failed claim left something changed"
    in_memory = {e.key: (e.in_use, e.container, e.note, e.lease) for e in service.pool.entries()}
    assert in_memory == expected
    assert service.pool.available_count() == 12_000 - 1


async def test_a_big_pair_claim_and_a_big_run_are_taken_whole(make_service, sliced):
    entries = [Entry("0.0.0.0", port, protocol) for protocol in ("tcp", "udp") for port in range(1, 6_001)]
    service, store = await make_service(entries)
    run = await service.claim(1_000, ("udp",), contiguous=True)
    ports = sorted(e.port for e in run)
    assert ports == list(range(ports[0], ports[0] + 1_000))
    pairs = await service.claim(3_000, ("tcp", "udp"))
    assert len(pairs) == 6_000 and len({(e.port, e.protocol) for e in pairs}) == 6_000
    assert set(Counter(e.port for e in pairs).values()) == {2}  # each number on both
    assert not {e.key for e in run} & {e.key for e in pairs}
    with pytest.raises(NoAvailablePorts):
        await service.claim(2_001, ("tcp", "udp"))  # 2,000 pairs are left
    assert all(store.rows[e.key][0] for e in pairs + run)
    assert sum(in_use for in_use, *_ in store.rows.values()) == 7_000


async def test_a_big_claim_under_way_when_a_commit_fails_claims_nothing(make_service, sliced):
    service, store = await make_service([Entry("0.0.0.0", port, "tcp") for port in range(1, 20_001)])
    store.gate = threading.Event()  # the next transaction hangs until released, then fails
    store.fail_next = 1
    small = asyncio.create_task(service.claim(1))
    await asyncio.sleep(0)
    big = asyncio.create_task(service.claim(15_000))
    while not service.gate.held:  # the big claim is half done, between two slices
        await asyncio.sleep(0)
    store.gate.set()
    results = await asyncio.gather(small, big, return_exceptions=True)
    assert all(isinstance(result, StorageError) for result in results), results
    # Memory was rebuilt from the store, where nothing was claimed; the pool is open again.
    assert not service.gate.held
    assert all(not in_use for in_use, *_ in store.rows.values())
    assert {e.key: (e.in_use, e.container, e.note, e.lease) for e in service.pool.entries()} == store.rows
    assert len(await service.claim(10_000)) == 10_000


async def test_a_container_waits_for_a_big_claim_and_never_sees_it_half_done(make_service, sliced):
    """Creating a container on a named port while a big claim is being sliced: the claim fails in
    the end and gives everything back, so the port is free when the container may look."""
    from lightd.service.containers import ContainerService, PortRequest
    from tests.fakes import FakeEngine

    bound = {(port, "tcp") for port in range(1, 12_001, 2)}
    entries = [Entry("0.0.0.0", port, "tcp") for port in range(1, 12_001)]
    service, store = await make_service(entries, host=BoundHost(bound))
    containers = ContainerService(service, FakeEngine())
    try:
        claim = asyncio.create_task(service.claim(8_000))
        while not service.gate.held:  # until the claim has taken some and yielded
            await asyncio.sleep(0)
        taken = [e.port for e in service.pool.entries() if e.in_use]
        assert taken, "the claim had taken nothing yet"
        created = await containers.create("mc-1", "busybox", [PortRequest("tcp", "0.0.0.0", taken[0])])
        with pytest.raises(NoAvailablePorts):
            claim.result()
        assert [b.host_port for b in created.bindings] == [taken[0]]
        assert store.rows[("0.0.0.0", taken[0], "tcp")] == (True, "mc-1", None, None)
    finally:
        await containers.close()
