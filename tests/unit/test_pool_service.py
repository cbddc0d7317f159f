import asyncio
import threading

import pytest

from lightd.core.changes import PutEvent, PutPort
from lightd.core.entry import Entry
from lightd.errors import AlreadyExists, Ambiguous, Conflict, NoAvailablePorts, StorageError, Unavailable
from lightd.service.pool_service import PoolService
from tests.fakes import FakeFirewall, MemoryStore


@pytest.fixture
async def make_service():
    started = []

    async def make(*specs, firewall=None):
        store = MemoryStore([Entry(ip, port, proto) for ip, port, proto in specs])
        service = PoolService(store, firewall)
        service.load()
        await service.start()
        started.append(service)
        return service, store

    yield make
    for service in started:
        await service.stop()


def rows_match_memory(service, store):
    memory = {e.key: (e.in_use, e.container, e.note, e.lease) for e in service.pool.entries()}
    return memory == store.rows


async def test_add_is_durable_before_it_returns(make_service):
    service, store = await make_service()
    await service.add("0.0.0.0", 25565, "tcp", note="lobby")
    assert store.rows[("0.0.0.0", 25565, "tcp")] == (False, None, "lobby", None)


async def test_duplicate_add_is_refused_and_changes_nothing(make_service):
    service, store = await make_service(("0.0.0.0", 25565, "tcp"))
    with pytest.raises(AlreadyExists, match="Port already exists in pool"):
        await service.add("0.0.0.0", 25565, "tcp")
    assert len(store.transactions) == 0


async def test_concurrent_marks_from_false_change_the_port_exactly_once(make_service):
    service, store = await make_service(("0.0.0.0", 25565, "tcp"))
    results = await asyncio.gather(
        *[service.set_use("0.0.0.0", 25565, None, True) for _ in range(50)]
    )
    assert sum(changed for _, changed in results) == 1
    assert store.rows[("0.0.0.0", 25565, "tcp")][0] is True


async def test_concurrent_changes_share_transactions(make_service):
    service, store = await make_service(*[("0.0.0.0", p, "tcp") for p in range(1, 201)])
    await asyncio.gather(*[service.set_use("0.0.0.0", p, "tcp", True) for p in range(1, 201)])
    assert len(store.transactions) < 200
    ports = [c for t in store.transactions for c in t if isinstance(c, PutPort)]
    assert len(ports) == 200
    # Each change is told once, in the transaction that saved it, ids in the order of commits.
    told = [c.id for t in store.transactions for c in t if isinstance(c, PutEvent)]
    assert len(told) == 200 and told == sorted(told)
    assert rows_match_memory(service, store)


async def test_marking_a_port_blocked_by_a_used_wildcard_is_refused_naming_it(make_service):
    service, _ = await make_service(("0.0.0.0", 25565, "tcp"), ("10.0.0.5", 25565, "tcp"))
    await service.set_use("0.0.0.0", 25565, "tcp", True)
    with pytest.raises(Conflict, match=r"conflicts with 0\.0\.0\.0:25565/tcp"):
        await service.set_use("10.0.0.5", 25565, "tcp", True)


async def test_a_port_held_by_a_container_cannot_be_freed_or_deleted(make_service):
    service, store = await make_service(("0.0.0.0", 25565, "tcp"))
    entry = service.pool.get(("0.0.0.0", 25565, "tcp"))
    service.pool.set_in_use(entry, True, container="mc-1")
    with pytest.raises(Conflict, match="held by container mc-1"):
        await service.set_use("0.0.0.0", 25565, None, False)
    with pytest.raises(Conflict, match="held by container mc-1"):
        await service.delete("0.0.0.0", 25565, None)
    assert ("0.0.0.0", 25565, "tcp") in service.pool


async def test_bulk_delete_reports_missing_and_held_entries_and_deletes_the_rest(make_service):
    service, store = await make_service(*[("0.0.0.0", p, "tcp") for p in (1, 2, 3)])
    service.pool.set_in_use(service.pool.get(("0.0.0.0", 3, "tcp")), True, container="c")
    result = await service.bulk_delete(
        [("0.0.0.0", 1, None), ("0.0.0.0", 1, None), ("0.0.0.0", 9, None), ("0.0.0.0", 3, None)]
    )
    assert [e.port for e in result.deleted] == [1]
    assert result.not_found == [{"ip": "0.0.0.0", "port": 9}]
    assert [e.port for e in result.skipped] == [3]
    assert set(store.rows) == {("0.0.0.0", 2, "tcp"), ("0.0.0.0", 3, "tcp")}


async def test_bulk_delete_with_an_ambiguous_item_deletes_nothing(make_service):
    service, store = await make_service(("0.0.0.0", 1, "tcp"), ("0.0.0.0", 1, "udp"), ("0.0.0.0", 2, "tcp"))
    with pytest.raises(Ambiguous, match="Nothing was deleted"):
        await service.bulk_delete([("0.0.0.0", 2, None), ("0.0.0.0", 1, None)])
    assert len(service.pool) == 3 and store.transactions == []


async def test_random_on_an_exhausted_pool_raises_no_available_ports(make_service):
    service, _ = await make_service(("0.0.0.0", 1, "tcp"))
    await service.set_use("0.0.0.0", 1, None, True)
    with pytest.raises(NoAvailablePorts):
        await service.random()


async def test_failed_commit_rolls_memory_back_to_the_store(make_service):
    service, store = await make_service(("0.0.0.0", 1, "tcp"))
    store.fail_next = 1
    with pytest.raises(StorageError):
        await service.set_use("0.0.0.0", 1, None, True)
    assert service.pool.get(("0.0.0.0", 1, "tcp")).in_use is False
    store.fail_next = 1
    with pytest.raises(StorageError):
        await service.add("0.0.0.0", 2, "tcp")
    assert ("0.0.0.0", 2, "tcp") not in service.pool
    assert rows_match_memory(service, store)


async def test_failed_commit_also_fails_changes_queued_behind_it(make_service):
    service, store = await make_service(*[("0.0.0.0", p, "tcp") for p in range(1, 21)])
    store.fail_next = 1
    results = await asyncio.gather(
        *[service.set_use("0.0.0.0", p, "tcp", True) for p in range(1, 21)], return_exceptions=True
    )
    failed = [r for r in results if isinstance(r, StorageError)]
    assert failed, "the first transaction failed"
    assert rows_match_memory(service, store)


async def test_firewall_failure_on_add_leaves_the_pool_unchanged(make_service):
    firewall = FakeFirewall()
    service, store = await make_service(firewall=firewall)
    firewall.fail = True
    with pytest.raises(Unavailable):
        await service.add("0.0.0.0", 25565, "tcp")
    assert len(service.pool) == 0 and store.rows == {}


async def test_firewall_failure_on_delete_keeps_the_entry(make_service):
    firewall = FakeFirewall()
    service, store = await make_service(("0.0.0.0", 25565, "tcp"), firewall=firewall)
    firewall.fail = True
    with pytest.raises(Unavailable):
        await service.delete("0.0.0.0", 25565, None)
    with pytest.raises(Unavailable):
        await service.bulk_delete([("0.0.0.0", 25565, None)])
    assert ("0.0.0.0", 25565, "tcp") in service.pool and ("0.0.0.0", 25565, "tcp") in store.rows


async def test_storage_failure_after_add_closes_the_rule_it_opened(make_service):
    firewall = FakeFirewall()
    service, store = await make_service(firewall=firewall)
    store.fail_next = 1
    with pytest.raises(StorageError):
        await service.add("0.0.0.0", 25565, "tcp")
    assert firewall.open_keys == set()


async def test_storage_failure_after_delete_opens_the_rule_it_closed(make_service):
    firewall = FakeFirewall()
    service, store = await make_service(("0.0.0.0", 25565, "tcp"), ("0.0.0.0", 25566, "tcp"),
                                        firewall=firewall)
    await firewall.reconcile(service.pool.entries())
    everything = set(firewall.open_keys)
    store.fail_next = 1
    with pytest.raises(StorageError):
        await service.delete("0.0.0.0", 25565, None)
    store.fail_next = 1
    with pytest.raises(StorageError):
        await service.bulk_delete([("0.0.0.0", 25565, None), ("0.0.0.0", 25566, None)])
    assert firewall.open_keys == everything == set(store.rows)
    assert rows_match_memory(service, store)


async def test_an_entry_whose_rule_is_being_opened_cannot_be_claimed_or_added_again(make_service):
    firewall = FakeFirewall()
    service, store = await make_service(firewall=firewall)
    firewall.gate = asyncio.Event()
    adding = asyncio.ensure_future(service.add("0.0.0.0", 25565, "tcp"))
    await asyncio.sleep(0)  # the add now waits for the firewall
    with pytest.raises(NoAvailablePorts):
        await service.claim(1)
    with pytest.raises(AlreadyExists):
        await service.add("0.0.0.0", 25565, "tcp")
    added, skipped = await service.add_many("0.0.0.0", ["tcp"], [25565])
    assert (added, [e.port for e in skipped]) == ([], [25565])
    firewall.fail = True
    firewall.gate.set()
    with pytest.raises(Unavailable):
        await adding
    assert len(service.pool) == 0 and store.rows == {}


async def test_reads_wait_for_a_change_that_is_not_durable_yet(make_service):
    service, store = await make_service(("0.0.0.0", 1, "tcp"))
    store.gate = threading.Event()  # the disk is slow: the commit hangs until released
    marking = asyncio.ensure_future(service.set_use("0.0.0.0", 1, None, True))
    await asyncio.sleep(0.05)
    reading = asyncio.ensure_future(service.get("0.0.0.0", 1, None))
    listing = asyncio.ensure_future(service.entries())
    await asyncio.sleep(0.05)
    assert not marking.done() and not reading.done() and not listing.done()
    store.gate.set()
    assert (await reading).in_use is True
    assert (await marking)[1] is True
    assert store.rows[("0.0.0.0", 1, "tcp")][0] is True
    await listing
