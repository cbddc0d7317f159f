"""The event hub: told only once durable, in order, from memory or the backlog, reset when too old."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from lightd.core.entry import Entry
from lightd.errors import StorageError
from lightd.service import events as events_module
from lightd.service.events import EventHub
from lightd.service.pool_service import PoolService
from tests.fakes import MemoryStore


def parse(chunks: list[bytes]) -> list[tuple[int, str, dict]]:
    """The events in what a subscriber was sent (comments left out)."""
    found = []
    for block in b"".join(chunks).decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if fields:
            found.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return found


class Follower:
    """A subscriber reading ``hub.follow(after)`` in a task of its own."""

    def __init__(self, hub: EventHub, after: int | None = None) -> None:
        self.chunks: list[bytes] = []
        self.task = asyncio.ensure_future(self._read(hub, after))

    async def _read(self, hub: EventHub, after: int | None) -> None:
        async for chunk in hub.follow(after):
            self.chunks.append(chunk)

    def events(self) -> list[tuple[int, str, dict]]:
        return parse(self.chunks)

    async def until(self, count: int) -> list[tuple[int, str, dict]]:
        for _ in range(400):
            if len(self.events()) >= count:
                break
            await asyncio.sleep(0.01)
        return self.events()

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def service():
    started = []

    async def make(store: MemoryStore | None = None, **hub_options) -> PoolService:
        store = store or MemoryStore([Entry("0.0.0.0", p, "tcp") for p in range(20000, 20100)])
        pools = PoolService(store, host=None, events=EventHub(store, **hub_options))
        pools.load()
        await pools.start()
        started.append(pools)
        return pools

    yield make
    for pools in started:
        pools.events.close()
        await pools.stop()


async def test_an_event_is_told_only_once_its_change_is_durable(service):
    pools = await service()
    store = pools.store
    follower = Follower(pools.events)
    await asyncio.sleep(0)
    store.gate = threading.Event()  # the disk takes its time
    claim = asyncio.ensure_future(pools.claim(1))
    await asyncio.sleep(0.2)
    assert follower.events() == [] and not claim.done()
    store.gate.set()
    [entry] = await claim
    [(event_id, kind, data)] = await follower.until(1)
    assert kind == "ports.claimed" and data["ports"][0]["port"] == entry.port and event_id == 1
    assert store.events[1][0] == "ports.claimed"  # saved with the change
    await follower.stop()


async def test_a_change_that_failed_is_never_told_and_its_id_is_never_reused(service):
    pools = await service()
    follower = Follower(pools.events)
    await asyncio.sleep(0)
    pools.store.fail_next = 1
    with pytest.raises(StorageError):
        await pools.set_use("0.0.0.0", 20000, "tcp", True)
    await pools.set_use("0.0.0.0", 20001, "tcp", True)
    events = await follower.until(1)
    await asyncio.sleep(0.1)
    assert [(i, k, d["ports"][0]["port"]) for i, k, d in follower.events()] == [(2, "port.used", 20001)]
    assert events and 1 not in pools.store.events
    assert pools.events.published == 1 and pools.events.last_id == 2  # told once: the saved one
    await follower.stop()


async def test_concurrent_changes_are_told_in_the_order_of_their_ids(service):
    pools = await service()
    follower = Follower(pools.events)
    await asyncio.sleep(0)
    await asyncio.gather(*[pools.set_use("0.0.0.0", p, "tcp", True) for p in range(20000, 20050)],
                         *[pools.claim(1) for _ in range(30)])
    events = await follower.until(80)
    ids = [i for i, _, _ in events]
    assert ids == sorted(ids) == list(range(1, 81))
    assert sorted(ids) == sorted(pools.store.events)
    await follower.stop()


async def test_a_bulk_change_is_one_event_with_all_its_entries(service):
    pools = await service()
    follower = Follower(pools.events)
    await asyncio.sleep(0)
    added, _ = await pools.add_many("0.0.0.0", ("tcp", "udp"), list(range(30000, 31000)))
    [(_, kind, data)] = await follower.until(1)
    assert kind == "port.added" and len(data["ports"]) == len(added) == 2000
    await follower.stop()


async def test_a_change_that_changes_nothing_tells_nothing(service):
    pools = await service()
    await pools.set_use("0.0.0.0", 20000, "tcp", True)
    await pools.set_use("0.0.0.0", 20000, "tcp", True)  # already in use
    await pools.bulk_delete([("0.0.0.0", 9, "tcp")])  # nothing to delete
    await pools.add_many("0.0.0.0", ("tcp",), [20001])  # there already
    assert [kind for kind, _ in pools.store.events.values()] == ["port.used"]


async def test_a_follower_far_behind_reads_the_backlog_from_the_store(service, monkeypatch):
    monkeypatch.setattr(events_module, "RING_EVENTS", 4)  # memory keeps only the last 4
    monkeypatch.setattr(events_module, "PAGE", 7)
    pools = await service()
    for port in range(20000, 20030):
        await pools.set_use("0.0.0.0", port, "tcp", True)
    follower = Follower(pools.events, after=3)
    events = await follower.until(27)
    assert [i for i, _, _ in events] == list(range(4, 31))
    assert [d["ports"][0]["port"] for _, _, d in events] == list(range(20003, 20030))
    await pools.set_use("0.0.0.0", 20050, "tcp", True)  # and then goes on live
    assert [i for i, _, _ in await follower.until(28)][-1] == 31
    await follower.stop()


async def test_events_survive_a_restart_and_numbering_goes_on(service):
    store = MemoryStore([Entry("0.0.0.0", p, "tcp") for p in range(20000, 20010)])
    pools = await service(store)
    for port in (20000, 20001):
        await pools.set_use("0.0.0.0", port, "tcp", True)
    pools.events.close()
    await pools.stop()
    pools = await service(store)
    follower = Follower(pools.events, after=1)
    await pools.set_use("0.0.0.0", 20002, "tcp", True)
    events = await follower.until(2)
    assert [(i, d["ports"][0]["port"]) for i, _, d in events] == [(2, 20001), (3, 20002)]
    await follower.stop()


async def test_a_follower_behind_the_backlog_or_ahead_of_it_gets_reset_then_live(service):
    pools = await service(backlog=100)
    for round_ in range(3):
        for port in range(20000, 20080):
            await pools.set_use("0.0.0.0", port, "tcp", round_ % 2 == 0)
    assert min(pools.store.events) > 1  # trimmed to about the backlog
    assert len(pools.store.events) <= 100 + events_module.TRIM_EVERY
    for after in (0, 5, 10_000):
        follower = Follower(pools.events, after=after)
        await asyncio.sleep(0.1)
        await pools.set_use("0.0.0.0", 20099, "tcp", after != 5)
        events = await follower.until(2)
        (reset_id, kind, data), (next_id, next_kind, _) = events[:2]
        assert kind == "reset" and data["after"] == after and reset_id == data["last"]
        assert next_id == reset_id + 1 and next_kind.startswith("port.")
        await follower.stop()
    follower = Follower(pools.events, after=pools.events.last_id - 50)  # within the backlog
    assert (await follower.until(50))[0][1] != "reset"
    await follower.stop()


async def test_an_idle_stream_gets_heartbeats_and_close_ends_it(service):
    pools = await service(heartbeat=0.05)
    follower = Follower(pools.events)
    await asyncio.sleep(0.3)
    assert follower.chunks[0] == b": connected\n\n"
    assert follower.chunks.count(b": heartbeat\n\n") >= 2
    pools.events.close()
    await asyncio.wait_for(follower.task, 2)  # ended by itself
    assert pools.events.subscribers == 0


async def test_a_write_given_up_as_overdue_is_told_from_the_store_when_it_lands(service):
    store = MemoryStore([Entry("0.0.0.0", p, "tcp") for p in range(20000, 20010)])
    pools = await service(store)
    pools.committer._timeout = 0.2  # the writer's bound, short for the test
    follower = Follower(pools.events)
    await asyncio.sleep(0)
    store.gate = threading.Event()
    with pytest.raises(StorageError, match="not confirmed"):
        await pools.set_use("0.0.0.0", 20000, "tcp", True)
    assert follower.events() == []
    store.gate.set()  # it was written after all: the reload tells it
    [(event_id, kind, _)] = await follower.until(1)
    assert (event_id, kind) == (1, "port.used")
    await follower.stop()
