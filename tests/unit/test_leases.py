"""Leases: the holder rule in core, and the lease use cases on a store in memory with a fake clock."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lightd.core import holders
from lightd.core.changes import DeleteLease, PutEvent, PutLease
from lightd.core.entry import Entry
from lightd.core.leases import Lease, new_lease, parse_ttl, rfc3339
from lightd.core.pool import Pool
from lightd.errors import Conflict, InvalidInput, NotFound, Unavailable
from lightd.service.containers import ContainerService, PortRequest
from lightd.service.leases import LeaseService
from lightd.service.pool_service import PoolService
from tests.fakes import FakeEngine, MemoryStore

START = 1_800_000_000.25  # a wall-clock time with a fraction: expiry rounds it up


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- core ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [0, 86_401, -1, 1.5, 60.0, "60", True, None, [60], {"s": 1}, 10**5000],
    ids=["0", "86401", "-1", "1.5", "60.0", "text", "true", "null", "list", "object", "huge"],
)
def test_a_ttl_is_a_whole_number_of_seconds_from_1_to_86400(value):
    with pytest.raises(InvalidInput, match="ttl must be an integer from 1 to 86400"):
        parse_ttl(value)


def test_a_ttl_in_range_is_taken_as_it_is():
    assert [parse_ttl(v) for v in (1, 60, 86_400)] == [1, 60, 86_400]


def test_expiry_is_whole_seconds_rounded_up_and_written_in_utc():
    lease = new_lease(START, 60)
    assert lease.expires_at == 1_800_000_061 and lease.created_at == 1_800_000_000
    assert lease.summary() == {"id": lease.id, "expires_at": "2027-01-15T08:01:01Z", "ttl": 60}
    assert lease.id.startswith("lease_") and len(lease.id) == 22
    assert not lease.due(START + 60) and lease.due(1_800_000_061)
    assert rfc3339(START, milliseconds=True) == "2027-01-15T08:00:00.250Z"


def test_a_renewal_counts_from_now_with_its_own_ttl_or_a_new_one():
    lease = Lease("lease_a", 100, 30, 70)
    assert lease.renewed(200.5) == Lease("lease_a", 231, 30, 70)
    assert lease.renewed(200.5, 5) == Lease("lease_a", 206, 5, 70)


KINDS = ["free", "operator", "container mc-1", "container mc-2", "lease l-1", "lease l-2"]


def _holder(kind: str) -> holders.Holder | None:
    if kind == "free":
        return None
    if kind == "operator":
        return holders.OPERATOR
    what, name = kind.split()
    return holders.container_holder(name) if what == "container" else holders.lease_holder(name)


@given(st.sampled_from(KINDS), st.sampled_from(KINDS[1:]))
def test_who_may_take_an_entry_from_whom(current_kind, taker_kind):
    """Free: anyone. Held: only its own holder (no change), or a container from a lease."""
    pool = Pool([Entry("0.0.0.0", 25565, "tcp")])
    entry = pool.get(("0.0.0.0", 25565, "tcp"))
    current, taker = _holder(current_kind), _holder(taker_kind)
    assert entry is not None and taker is not None
    if current is not None:
        holders.take(pool, entry, current)
    allowed = current is None or current == taker or (
        current.kind == "lease" and taker.kind == "container"
    )
    if not allowed:
        with pytest.raises(Conflict):
            holders.take(pool, entry, taker)
        assert holders.holder_of(entry) == current
        return
    assert holders.take(pool, entry, taker) is (current != taker)
    assert holders.holder_of(entry) == taker
    assert pool.leased("l-1") == ([entry] if taker_kind == "lease l-1" else [])
    assert pool.leased("l-2") == ([entry] if taker_kind == "lease l-2" else [])


def test_a_leased_entry_is_freed_only_by_its_lease_and_never_deleted():
    pool = Pool([Entry("0.0.0.0", 25565, "tcp")])
    entry = pool.get(("0.0.0.0", 25565, "tcp"))
    assert entry is not None
    holders.take(pool, entry, holders.lease_holder("lease_x"))
    for other in (holders.OPERATOR, holders.container_holder("mc"), holders.lease_holder("lease_y")):
        with pytest.raises(Conflict, match="held by lease lease_x; release it"):
            holders.release(pool, entry, other)
    with pytest.raises(Conflict, match=r"DELETE /network/leases/lease_x") as refused:
        holders.check_removable(entry)
    assert refused.value.details["held_by"] == {"kind": "lease", "name": "lease_x"}
    assert not holders.mark_in_use(pool, entry)  # PUT use true: idempotent, the lease keeps it
    assert holders.release(pool, entry, holders.lease_holder("lease_x"))
    assert not entry.in_use and entry.lease is None and pool.leased("lease_x") == []


def test_the_start_up_check_hands_entries_of_an_unknown_lease_to_the_operator():
    pool = Pool([Entry("0.0.0.0", 1, "tcp", True, None, None, "lease_gone"),
                 Entry("0.0.0.0", 2, "tcp", True, None, None, "lease_here")])
    repairs = holders.cross_check(pool, {}, {"lease_here"})
    assert [(r.key, r.holder) for r in repairs] == [(("0.0.0.0", 1, "tcp"), holders.OPERATOR)]
    assert "lease lease_gone, which is not known" in repairs[0].problem
    kept = pool.get(("0.0.0.0", 1, "tcp"))
    assert kept is not None and kept.in_use and kept.lease is None  # a leak, never a double hand-out


# -- the service ----------------------------------------------------------------------------------


@pytest.fixture
async def world():
    store = MemoryStore([Entry("0.0.0.0", p, "tcp") for p in range(25565, 25570)])
    clock = Clock()
    made: list[tuple[PoolService, ContainerService]] = []

    async def start() -> tuple[PoolService, LeaseService, ContainerService, FakeEngine]:
        pools = PoolService(store, host=None)
        leases = LeaseService(pools, clock=clock)
        engine = FakeEngine()
        containers = ContainerService(pools, engine, leases=leases)
        pools.load()
        await pools.start()
        made.append((pools, containers))
        return pools, leases, containers, engine

    yield store, clock, start
    for pools, containers in made:
        await pools.stop()
        await containers.close()


def told(store: MemoryStore) -> list[tuple[str, dict]]:
    return [(kind, json.loads(data)) for _, (kind, data) in sorted(store.events.items())]


async def test_a_claim_with_a_ttl_is_held_by_a_lease_saved_with_it(world):
    store, clock, start = world
    pools, leases, _, _ = await start()
    lease, entries = await leases.claim(2, ("tcp",), None, False, None, 30)
    assert store.leases == {lease.id: lease} and lease.expires_at == 1_800_000_031
    assert all(store.rows[e.key] == (True, None, None, lease.id) for e in entries)
    [claim] = [t for t in store.transactions if any(isinstance(c, PutLease) for c in t)]
    assert {c.port for c in claim if hasattr(c, "port")} == {e.port for e in entries}  # one transaction
    assert pools.pool.available_count() == 3
    assert told(store)[-1][0] == "ports.claimed"
    assert told(store)[-1][1]["lease"] == lease.summary()


async def test_a_lease_expires_at_its_time_and_not_before(world):
    store, clock, start = world
    pools, leases, _, _ = await start()
    lease, entries = await leases.claim(1, ("tcp",), None, False, None, 10)
    clock.advance(10.74)  # 1 ms before expires_at
    assert await leases.expire_due() == []
    clock.advance(0.01)
    assert await leases.expire_due() == [lease.id]
    assert store.leases == {} and store.rows[entries[0].key] == (False, None, None, None)
    kind, data = told(store)[-1]
    assert kind == "lease.expired" and [p["port"] for p in data["ports"]] == [entries[0].port]
    with pytest.raises(NotFound, match="Lease not found"):
        await leases.get(lease.id)


async def test_every_lease_operation_sees_a_lease_past_its_time_as_gone(world):
    store, clock, start = world
    pools, leases, _, _ = await start()
    lease, entries = await leases.claim(1, ("tcp",), None, False, None, 5)
    clock.advance(6)
    for call in (leases.renew(lease.id, None), leases.release(lease.id), leases.keep(lease.id),
                 leases.get(lease.id)):
        with pytest.raises(NotFound):
            await call
    assert not entries[0].in_use and store.leases == {}


async def test_renew_moves_the_expiry_from_now_and_keeps_the_entries(world):
    store, clock, start = world
    pools, leases, _, _ = await start()
    lease, entries = await leases.claim(1, ("tcp",), None, False, None, 10)
    clock.advance(8)
    renewed, held = await leases.renew(lease.id, 20)
    assert renewed.expires_at == 1_800_000_029 and renewed.ttl == 20 and held == entries
    assert store.leases[lease.id] == renewed
    clock.advance(15)  # past the first expiry
    assert await leases.expire_due() == []
    assert entries[0].lease == lease.id


async def test_release_frees_and_keep_hands_to_the_operator(world):
    store, clock, start = world
    pools, leases, _, _ = await start()
    first, [one] = await leases.claim(1, ("tcp",), None, False, None, 60)
    second, [two] = await leases.claim(1, ("tcp",), None, False, None, 60)
    assert await leases.release(first.id) == [one]
    assert store.rows[one.key] == (False, None, None, None)
    assert await leases.keep(second.id) == [two]
    assert store.rows[two.key] == (True, None, None, None)
    assert store.leases == {}
    clock.advance(120)
    assert await leases.expire_due() == [] and two.in_use  # kept: no expiry any more
    entry, changed = await pools.set_use(two.ip, two.port, "tcp", False)  # the operator's now
    assert changed and not entry.in_use
    assert [k for k, _ in told(store)][-3:] == ["lease.released", "lease.kept", "port.freed"]


async def test_a_container_takes_over_leased_entries_and_an_empty_lease_goes(world):
    store, clock, start = world
    pools, leases, containers, _ = await start()
    lease, entries = await leases.claim(2, ("tcp",), None, False, None, 60)
    first, second = entries
    await containers.create("mc-1", "busybox", [PortRequest("tcp", first.ip, first.port)])
    assert store.rows[first.key] == (True, "mc-1", None, None)
    assert pools.leased(lease.id) == [second] and lease.id in store.leases
    await containers.create("mc-2", "busybox", [PortRequest("tcp", second.ip, second.port)])
    assert store.leases == {} and not leases.exists(lease.id)
    clock.advance(120)
    assert await leases.expire_due() == []
    assert first.container == "mc-1" and second.container == "mc-2"
    assert told(store)[-1][0] == "container.created"


async def test_a_create_that_fails_gives_the_entries_back_to_their_lease(world):
    store, clock, start = world
    pools, leases, containers, engine = await start()
    lease, [entry] = await leases.claim(1, ("tcp",), None, False, None, 60)
    engine.fail_next("create", Unavailable("the engine is down"))
    with pytest.raises(Unavailable):
        await containers.create("mc-1", "busybox", [PortRequest("tcp", entry.ip, entry.port)])
    assert store.rows[entry.key] == (True, None, None, lease.id)
    assert pools.leased(lease.id) == [entry] and store.leases == {lease.id: lease}


async def test_a_create_that_fails_after_its_lease_ended_frees_the_entries(world):
    store, clock, start = world
    pools, leases, containers, engine = await start()
    lease, [entry] = await leases.claim(1, ("tcp",), None, False, None, 60)
    taken = containers._claim([PortRequest("tcp", entry.ip, entry.port)], "mc-1")[1]
    await leases.release(lease.id)  # the lease holds nothing now; the container has the entry
    containers._give_back(taken, "mc-1")
    assert not entry.in_use and entry.lease is None


async def test_leases_outlive_a_restart_and_those_due_meanwhile_are_freed(world):
    store, clock, start = world
    pools, leases, _, _ = await start()
    short, [a] = await leases.claim(1, ("tcp",), None, False, None, 5)
    long, [b] = await leases.claim(1, ("tcp",), None, False, None, 500)
    renewed, _ = await leases.renew(long.id, 600)
    await pools.stop()
    clock.advance(100)  # the daemon is down while the short one runs out
    pools, leases, _, _ = await start()
    assert set(leases.leases) == {short.id, long.id}
    assert await leases.expire_due() == [short.id]
    assert not pools.lookup(a.key).in_use
    assert leases.leases[long.id].expires_at == renewed.expires_at
    assert pools.lookup(b.key).lease == long.id


async def test_a_failed_save_leaves_the_lease_as_the_store_has_it(world):
    store, clock, start = world
    pools, leases, _, _ = await start()
    lease, [entry] = await leases.claim(1, ("tcp",), None, False, None, 60)
    store.fail_next = 1
    with pytest.raises(Exception, match="disk I/O error"):
        await leases.release(lease.id)
    assert leases.leases[lease.id] == lease and pools.lookup(entry.key).lease == lease.id
    store.fail_next = 1
    with pytest.raises(Exception, match="disk I/O error"):
        await leases.renew(lease.id, 999)
    assert leases.leases[lease.id].ttl == 60  # memory rebuilt from the store
    assert not any(isinstance(c, DeleteLease) for t in store.transactions for c in t)
    assert [e for t in store.transactions for e in t if isinstance(e, PutEvent)][-1].type == "ports.claimed"
