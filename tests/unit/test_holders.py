"""The one rule of who may take, free or remove an entry (lightd.core.holders)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightd.core import holders
from lightd.core.changes import put_port
from lightd.core.containers import Binding, Container
from lightd.core.entry import Entry
from lightd.core.pool import Pool
from lightd.errors import Conflict
from lightd.service.containers import ContainerService
from lightd.service.pool_service import PoolService
from tests.fakes import FakeEngine, MemoryStore

IPS = ("0.0.0.0", "127.0.0.1")
HOLDERS = (holders.OPERATOR, holders.container_holder("mc-1"), holders.container_holder("mc-2"))


def small_pool() -> Pool:
    return Pool(Entry(ip, port, "tcp") for ip in IPS for port in (20001, 20002))


operations = st.lists(
    st.tuples(
        st.sampled_from(["take", "release", "mark", "remove"]),
        st.sampled_from(IPS),
        st.sampled_from([20001, 20002]),
        st.sampled_from(HOLDERS),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_every_entry_keeps_one_holder_whatever_is_asked(steps) -> None:
    """Checked against a plain model: who holds each key, and what may change it."""
    pool = small_pool()
    model: dict[tuple[str, int, str], holders.Holder | None] = {e.key: None for e in pool.entries()}
    for action, ip, port, holder in steps:
        key = (ip, port, "tcp")
        entry = pool.get(key)
        assert entry is not None
        current = model[key]
        blocked = any(
            model[(other, port, "tcp")] is not None for other in IPS
            if other != ip and "0.0.0.0" in (ip, other)
        )
        if action == "take":
            if current is None and blocked or current not in (None, holder):
                with pytest.raises(Conflict):
                    holders.take(pool, entry, holder)
            else:
                assert holders.take(pool, entry, holder) is (current is None)
                model[key] = holder
        elif action == "mark":
            if current is None and blocked:
                with pytest.raises(Conflict):
                    holders.mark_in_use(pool, entry)
            else:
                assert holders.mark_in_use(pool, entry) is (current is None)
                model[key] = current or holders.OPERATOR
        elif action == "release":
            if current not in (None, holder):
                with pytest.raises(Conflict):
                    holders.release(pool, entry, holder)
            else:
                assert holders.release(pool, entry, holder) is (current is not None)
                model[key] = None
        else:
            if current is not None and current != holders.OPERATOR:
                with pytest.raises(Conflict, match=f"container {current.name}"):
                    holders.check_removable(entry)
            else:
                holders.check_removable(entry)
        for key, expected in model.items():
            got = pool.get(key)
            assert got is not None and holders.holder_of(got) == expected
        # The kernel could bind what is in use: never a wildcard and a specific ip at once.
        for port_number in (20001, 20002):
            used = [ip for ip in IPS if model[(ip, port_number, "tcp")] is not None]
            assert len(used) <= 1


async def test_deleting_a_container_frees_only_what_it_holds() -> None:
    """A container whose stored bindings name another holder's entry must not free it."""
    store = MemoryStore([Entry("0.0.0.0", port, "tcp") for port in (20001, 20002)])
    pools = PoolService(store, host=None)
    containers = ContainerService(pools, FakeEngine())
    pools.load()
    await pools.start()
    try:
        pool = pools.pool
        mine, theirs = pool.get(("0.0.0.0", 20001, "tcp")), pool.get(("0.0.0.0", 20002, "tcp"))
        assert mine is not None and theirs is not None
        holders.take(pool, mine, holders.container_holder("mc-3"))
        holders.take(pool, theirs, holders.container_holder("mc-4"))
        await pools.save([put_port(mine), put_port(theirs)])
        containers.containers["mc-3"] = Container(
            "mc-3", "busybox", bindings=[Binding("0.0.0.0", 20001, "tcp", 1),
                                         Binding("0.0.0.0", 20002, "tcp", 2)], state="running")
        freed = await containers.delete("mc-3")
        assert [e.port for e in freed] == [20001]
        assert theirs.in_use and theirs.container == "mc-4"
        assert store.rows[theirs.key] == (True, "mc-4", None, None)
    finally:
        await pools.stop()
        await containers.close()


def test_cross_check_leaves_a_consistent_pool_alone() -> None:
    pool = small_pool()
    entry = pool.get(("127.0.0.1", 20001, "tcp"))
    assert entry is not None
    holders.take(pool, entry, holders.container_holder("mc-1"))
    containers = {"mc-1": Container("mc-1", "busybox", bindings=[Binding("127.0.0.1", 20001, "tcp", 1)])}
    assert holders.cross_check(pool, containers) == []
    assert entry.container == "mc-1"
