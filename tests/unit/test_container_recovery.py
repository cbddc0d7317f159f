"""A crash at every step of a container's create, rebind and delete, then a start from the store.

``crash_point`` is made to raise at one point, so nothing after it runs (no undo, no last save),
as if the process had died there; the engine keeps what it had, as a real one would. A new
PoolService and ContainerService are then built from the store, and the start-up checks run.
After that the container must run on its old ports or its new ones, never both and never none,
with one engine container, and the pool's holders must say the same. The same points are hit
with a real SIGKILL on real engines in tests/e2e/test_crash_containers.py.
"""

import pytest

from lightd.core.entry import Entry
from lightd.crash_points import POINTS
from lightd.service import containers as containers_module
from lightd.service.containers import ContainerService, PortRequest
from lightd.service.pool_service import PoolService
from tests.crash_cases import CASES
from tests.fakes import FakeEngine, MemoryStore

TCP = "tcp"
OLD, NEW = [25565, 19132], [25566, 19133]


class Crash(Exception):
    """Not a LightdError, so no handler of the service undoes anything on its way up."""


def requests(ports):
    return [PortRequest(TCP, "0.0.0.0", ports[0], 25565), PortRequest("udp", "0.0.0.0", ports[1], 19132)]


def fresh_services(store, engine):
    pools = PoolService(store, host=None)
    containers = ContainerService(pools, engine)
    pools.load()
    return pools, containers


@pytest.fixture
def store():
    return MemoryStore(
        [Entry("0.0.0.0", p, TCP) for p in (25565, 25566)]
        + [Entry("0.0.0.0", p, "udp") for p in (19132, 19133)]
    )


def crash_at(monkeypatch, point):
    def crash_point(name):
        if name == point:
            raise Crash(name)

    monkeypatch.setattr(containers_module, "crash_point", crash_point)


async def restart(store, engine):
    pools, containers = fresh_services(store, engine)
    await pools.start()
    problems = await containers.check_holders()
    report = await containers.reconcile()
    return pools, containers, problems, report


def holders_of(pools):
    return {(e.port, e.protocol): e.container for e in pools.pool.entries() if e.in_use}


def ports_of(bindings):
    return sorted(b.host_port for b in bindings)


async def run_until_crash(store, engine, monkeypatch, point, operation, shared):
    pools, containers = fresh_services(store, engine)
    await pools.start()
    try:
        if operation != "create":
            await containers.create("mc-1", "busybox", requests(OLD))
        crash_at(monkeypatch, point)
        with pytest.raises(Crash):
            if operation == "create":
                await containers.create("mc-1", "busybox", requests(OLD))
            elif operation == "rebind":
                # shared: the tcp port stays, so the old container must stop before the new starts
                await containers.rebind("mc-1", requests([OLD[0], NEW[1]] if shared else NEW))
            else:
                await containers.delete("mc-1")
    finally:
        monkeypatch.undo()
        await pools.stop()
        await containers.close()


def test_every_crash_point_is_tested():
    assert {case[0] for case in CASES} == POINTS


@pytest.mark.parametrize(("point", "operation", "shared", "ends_on"), CASES)
async def test_a_crash_at_each_step_is_settled_at_the_next_start(
    store, monkeypatch, point, operation, shared, ends_on
):
    engine = FakeEngine()
    await run_until_crash(store, engine, monkeypatch, point, operation, shared)
    pools, containers, _, report = await restart(store, engine)
    try:
        if ends_on is None:  # a create that never answered, or a delete: nothing is left
            assert "mc-1" not in containers.containers
            assert engine.containers == {}
            assert holders_of(pools) == {}
            return
        wanted = {"old": OLD, "new": [OLD[0], NEW[1]] if shared else NEW}[ends_on]
        container = containers.get("mc-1")
        assert container.state == "running" and container.pending is None
        assert ports_of(container.bindings) == sorted(wanted)
        [only] = engine.containers.values()  # never both, never none
        assert only["id"] == container.engine_id and only["state"] == "running"
        assert only["name"] == "mc-1" and ports_of(only["bindings"]) == sorted(wanted)
        assert holders_of(pools) == {(b.host_port, b.protocol): "mc-1" for b in container.bindings}
        assert report["rolled_forward" if ends_on == "new" else "rolled_back"] == ["mc-1"]
        # And the store says the same after one more start: the repair was saved.
        pools2, containers2, problems, report2 = await restart(store, engine)
        assert problems == [] and not any(report2.values())
        assert ports_of(containers2.get("mc-1").bindings) == sorted(wanted)
        await pools2.stop()
        await containers2.close()
    finally:
        await pools.stop()
        await containers.close()
