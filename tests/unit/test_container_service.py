import asyncio
import json

import pytest

from lightd.core.containers import Binding, Container, rebind_name
from lightd.core.entry import Entry
from lightd.errors import AlreadyExists, Conflict, InvalidInput, NoAvailablePorts, NotFound, Unavailable
from lightd.service.containers import ContainerService, PortRequest
from lightd.service.pool_service import PoolService
from tests.fakes import FakeEngine, MemoryStore

TCP = "tcp"


def explicit(port, protocol=TCP, ip="0.0.0.0", container_port=None):
    return PortRequest(protocol, ip, port, container_port)


@pytest.fixture
async def world():
    store = MemoryStore([Entry("0.0.0.0", p, TCP) for p in range(25565, 25570)]
                        + [Entry("0.0.0.0", 19132, "udp")])
    pools = PoolService(store, host=None)
    engine = FakeEngine()
    containers = ContainerService(pools, engine)
    pools.load()
    await pools.start()
    yield pools, containers, engine, store
    await pools.stop()
    await containers.close()


def held(pools, holder):
    return sorted(e.port for e in pools.pool.entries() if e.container == holder)


async def test_create_marks_every_port_for_the_container_durably(world):
    pools, containers, engine, store = world
    created = await containers.create("mc-1", "busybox", [explicit(25565), explicit(19132, "udp")])
    assert created.state == "running" and created.engine_id in engine.containers
    assert held(pools, "mc-1") == [19132, 25565]
    assert store.rows[("0.0.0.0", 25565, TCP)] == (True, "mc-1", None, None)
    assert json.loads(store.containers["mc-1"])["state"] == "running"


async def test_create_fills_requests_from_the_pool(world):
    pools, containers, engine, _ = world
    created = await containers.create("mc-1", "busybox", [PortRequest(TCP, container_port=25565)])
    [binding] = created.bindings
    assert binding.container_port == 25565 and 25565 <= binding.host_port <= 25569
    assert engine.containers[created.engine_id]["bindings"] == created.bindings


@pytest.mark.parametrize(
    ("requests", "error", "message"),
    [
        ([explicit(25565), explicit(30000)], Conflict, "0.0.0.0:30000/tcp is not in the pool"),
        ([explicit(25565), explicit(25566, container_port=1), explicit(25566)], InvalidInput, "listed twice"),
        ([explicit(25565)] + [PortRequest(TCP, container_port=1)] * 5, NoAvailablePorts, "No available"),
    ],
)
async def test_create_is_all_or_nothing(world, requests, error, message):
    pools, containers, engine, store = world
    with pytest.raises(error, match=message):
        await containers.create("mc-1", "busybox", requests)
    assert held(pools, "mc-1") == [] and "mc-1" not in containers.containers
    assert engine.containers == {} and store.containers == {}


async def test_a_port_in_use_or_blocked_is_refused_naming_it(world):
    pools, containers, _, _ = world
    await pools.set_use("0.0.0.0", 25565, TCP, True)
    with pytest.raises(Conflict, match="0.0.0.0:25565/tcp is already in use"):
        await containers.create("mc-1", "busybox", [explicit(25565)])
    await containers.create("mc-2", "busybox", [explicit(25566)])
    with pytest.raises(Conflict, match="already in use by container mc-2"):
        await containers.create("mc-3", "busybox", [explicit(25566)])


async def test_duplicate_internal_id_is_409(world):
    _, containers, _, _ = world
    await containers.create("mc-1", "busybox", [explicit(25565)])
    with pytest.raises(AlreadyExists, match="Container mc-1 already exists"):
        await containers.create("mc-1", "busybox", [explicit(25566)])


async def test_engine_failure_on_create_frees_everything(world):
    pools, containers, engine, store = world
    engine.fail_create = Unavailable("bind: address already in use", reason="port_in_use")
    with pytest.raises(Conflict, match="address already in use"):
        await containers.create("mc-1", "busybox", [explicit(25565)])
    assert held(pools, "mc-1") == [] and store.containers == {}
    assert store.rows[("0.0.0.0", 25565, TCP)] == (False, None, None, None)


async def test_rebind_claims_new_frees_old_and_replaces_the_engine_container(world):
    pools, containers, engine, store = world
    created = await containers.create("mc-1", "busybox", [explicit(25565), explicit(25566)])
    old_id = created.engine_id
    rebound = await containers.rebind("mc-1", [explicit(25566), explicit(25567)])
    assert held(pools, "mc-1") == [25566, 25567]
    assert store.rows[("0.0.0.0", 25565, TCP)] == (False, None, None, None)
    assert old_id not in engine.containers
    assert engine.containers[rebound.engine_id]["name"] == "mc-1"
    assert f"stop {old_id}" in engine.calls, "a shared port means the old one stops first"


async def test_failed_rebind_keeps_the_old_bindings_and_restarts_the_old_container(world):
    pools, containers, engine, store = world
    created = await containers.create("mc-1", "busybox", [explicit(25565)])
    engine.fail_create = Unavailable("engine said no", reason="engine_error")
    with pytest.raises(Unavailable):
        await containers.rebind("mc-1", [explicit(25565), explicit(25567)])
    assert held(pools, "mc-1") == [25565]
    assert store.rows[("0.0.0.0", 25567, TCP)] == (False, None, None, None)
    assert engine.containers[created.engine_id]["state"] == "running"
    assert containers.get("mc-1").state == "running"


async def test_rebind_to_a_taken_port_changes_nothing(world):
    pools, containers, engine, _ = world
    await containers.create("mc-1", "busybox", [explicit(25565)])
    await containers.create("mc-2", "busybox", [explicit(25566)])
    calls = len(engine.calls)
    with pytest.raises(Conflict, match="in use by container mc-2"):
        await containers.rebind("mc-1", [explicit(25566)])
    assert held(pools, "mc-1") == [25565] and len(engine.calls) == calls


async def test_delete_removes_the_engine_container_and_frees_its_ports(world):
    pools, containers, engine, store = world
    await containers.create("mc-1", "busybox", [explicit(25565)])
    with pytest.raises(Conflict, match="held by container mc-1"):
        await pools.delete("0.0.0.0", 25565, None)
    freed = await containers.delete("mc-1")
    assert [e.port for e in freed] == [25565] and engine.containers == {}
    assert store.rows[("0.0.0.0", 25565, TCP)] == (False, None, None, None) and store.containers == {}
    with pytest.raises(NotFound):
        await containers.delete("mc-1")


async def test_operations_on_one_container_are_serialised(world):
    pools, containers, _, _ = world
    await containers.create("mc-1", "busybox", [explicit(25565)])
    results = await asyncio.gather(
        containers.rebind("mc-1", [explicit(25566)]),
        containers.rebind("mc-1", [explicit(25567)]),
        return_exceptions=True,
    )
    assert not any(isinstance(r, Exception) for r in results)
    assert held(pools, "mc-1") == [25567]
    assert all(not e.in_use for e in pools.pool.entries() if e.port in (25565, 25566))


async def test_reconcile_undoes_an_interrupted_create_and_rebind_and_reports_missing(world):
    pools, containers, engine, store = world
    await containers.create("done", "busybox", [explicit(25565)])
    await containers.create("lost", "busybox", [explicit(25566)])
    await containers.create("moving", "busybox", [explicit(25567)])
    engine.containers = {k: v for k, v in engine.containers.items() if v["name"] != "lost"}
    # A crash after the intent was saved: a half-made create, and a rebind under way.
    half = containers.containers["moving"]
    half.state, half.pending = "rebinding", [Binding("0.0.0.0", 25568, TCP, 25568)]
    pools.pool.set_in_use(pools.pool.get(("0.0.0.0", 25568, TCP)), True, "moving")
    creating = Container("new", "busybox", bindings=[Binding("0.0.0.0", 25569, TCP, 25569)])
    pools.pool.set_in_use(pools.pool.get(("0.0.0.0", 25569, TCP)), True, "new")
    containers.containers["new"] = creating
    engine.create("new", "busybox", internal_id="new")
    report = await containers.reconcile()
    assert sorted(report["rolled_back"]) == ["moving", "new"] and report["missing"] == ["lost"]
    assert "new" not in containers.containers
    assert not any(info["internal_id"] == "new" for info in engine.containers.values())
    assert held(pools, "moving") == [25567] and held(pools, "new") == []
    assert containers.get("lost").state == "missing" and held(pools, "lost") == [25566]
    assert json.loads(store.containers["lost"])["state"] == "missing"


# -- a rebind whose engine call fails after the new container exists (found by tests/model) ------


def engine_view(engine, internal_id="mc-1"):
    """The containers the engine has for ``internal_id``: (name, host ports, state)."""
    return sorted(
        (info["name"], sorted(b.host_port for b in info["bindings"]), info["state"])
        for info in engine.containers.values() if info["internal_id"] == internal_id
    )


async def test_a_rebind_whose_rename_fails_is_done_all_the_same(world):
    pools, containers, engine, store = world
    await containers.create("mc-1", "busybox", [explicit(25565)])
    engine.fail_next("rename")
    rebound = await containers.rebind("mc-1", [explicit(25566)])
    assert rebound.state == "running" and [b.host_port for b in rebound.bindings] == [25566]
    assert engine_view(engine) == [(rebind_name("mc-1"), [25566], "running")]
    assert held(pools, "mc-1") == [25566] and store.rows[("0.0.0.0", 25565, TCP)][0] is False
    # The next rebind takes the free name and ends with one container, named as it should be.
    await containers.rebind("mc-1", [explicit(25567)])
    assert engine_view(engine) == [("mc-1", [25567], "running")]
    assert held(pools, "mc-1") == [25567]


async def test_a_rebind_that_cannot_remove_the_old_container_undoes_the_new_one(world):
    pools, containers, engine, store = world
    await containers.create("mc-1", "busybox", [explicit(25565)])
    engine.fail_next("remove", after=1)  # the first remove clears a leftover name; then the old
    with pytest.raises(Unavailable):
        await containers.rebind("mc-1", [explicit(25566)])
    assert engine_view(engine) == [("mc-1", [25565], "running")]
    assert held(pools, "mc-1") == [25565]
    assert store.rows[("0.0.0.0", 25566, TCP)] == (False, None, None, None)


async def test_a_new_container_that_cannot_be_removed_keeps_its_ports_held_until_restart(world):
    pools, containers, engine, store = world
    await containers.create("mc-1", "busybox", [explicit(25565)])
    engine.fail_next("remove", after=1)  # the old container...
    engine.fail_next("remove")  # ...and then the new one
    with pytest.raises(Unavailable, match="stay in use"):
        await containers.rebind("mc-1", [explicit(25566)])
    assert engine_view(engine) == [("mc-1", [25565], "running"), (rebind_name("mc-1"), [25566], "running")]
    # A container publishes 25566: nobody else may be handed it.
    assert held(pools, "mc-1") == [25565, 25566]
    with pytest.raises(NoAvailablePorts):
        await pools.claim(4)
    # A restart: the holders are cross-checked and the stray container removed.
    pools.load()
    problems = await containers.check_holders()
    report = await containers.reconcile()
    assert report["strays_removed"] == [rebind_name("mc-1")]
    assert engine_view(engine) == [("mc-1", [25565], "running")]
    assert any("0.0.0.0:25566/tcp" in problem for problem in problems)
    entry = pools.lookup(("0.0.0.0", 25566, TCP))
    assert entry is not None and entry.in_use and entry.container is None  # the operator's now


async def test_a_rebind_never_touches_a_container_whose_internal_id_looks_like_a_temporary_name(world):
    # "mc-1.rebind" is a valid internal_id, and was the temporary name of mc-1's rebind: the
    # rebind removed it as a leftover of a crash, taking another server down.
    pools, containers, engine, _ = world
    await containers.create("mc-1", "busybox", [explicit(25565)])
    other = await containers.create("mc-1.rebind", "busybox", [explicit(25567)])
    await containers.rebind("mc-1", [explicit(25566)])
    assert other.engine_id in engine.containers
    assert engine_view(engine) == [("mc-1", [25566], "running")]
    assert engine_view(engine, "mc-1.rebind") == [("mc-1.rebind", [25567], "running")]
    assert held(pools, "mc-1.rebind") == [25567]
    assert len(rebind_name("mc-1")) > 128  # longer than any internal_id may be
