"""The pool service keeps the kernel's reserved numbers in step with the pool (in memory)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from lightd.core.entry import Entry
from lightd.errors import StorageError, Unavailable
from lightd.service.pool_service import PoolService
from lightd.service.ports import ReservedPorts
from tests.fakes import FakeFirewall, MemoryStore


class FakeReservedPorts:
    """Keeps what it was last handed, as the set of numbers; can be told to fail."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.applied: list[set[int]] = []
        self.fail = 0

    @property
    def numbers(self) -> set[int]:
        return self.applied[-1]

    def apply(self, wanted: bytes) -> None:
        if self.fail:
            self.fail -= 1
            raise Unavailable("ip_local_reserved_ports could not be changed: test failure")
        self.applied.append({port for port, flag in enumerate(wanted) if flag})

    def warnings(self, ports: Sequence[int]) -> list[str]:
        return [f"ports {list(ports)} are not reserved"]

    def status(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "reason": "test", "count": len(self.numbers)}


_TYPED: type[ReservedPorts] = FakeReservedPorts  # mypy: the fake is the Protocol's shape


@pytest.fixture
async def make_service():
    started = []

    async def make(*specs, reserved=None, firewall=None):
        store = MemoryStore([Entry(ip, port, proto) for ip, port, proto in specs])
        kernel = reserved or FakeReservedPorts()
        service = PoolService(store, firewall, reserved=kernel)
        service.load()
        await service.start()
        started.append(service)
        return service, store, kernel

    yield make
    for service in started:
        await service.stop()


async def test_the_pool_loaded_at_start_is_reserved_at_once(make_service):
    _, _, kernel = await make_service(("0.0.0.0", 25565, "tcp"), ("10.0.0.5", 27015, "udp"))
    assert kernel.applied == [{25565, 27015}]


async def test_a_number_stays_reserved_until_its_last_entry_goes(make_service):
    service, _, kernel = await make_service()
    await service.add("0.0.0.0", 40000, "tcp")
    await service.add("0.0.0.0", 40000, "udp")
    await service.add("127.0.0.1", 40000, "tcp")
    assert kernel.numbers == {40000}
    await service.delete("0.0.0.0", 40000, "tcp")
    await service.delete("0.0.0.0", 40000, "udp")
    assert kernel.numbers == {40000}, "127.0.0.1:40000/tcp still holds the number"
    await service.delete("127.0.0.1", 40000, "tcp")
    assert kernel.numbers == set()


async def test_a_bulk_add_and_a_bulk_delete_are_one_write_each(make_service):
    service, _, kernel = await make_service()
    before = len(kernel.applied)
    added, _ = await service.add_many("0.0.0.0", ("tcp", "udp"), list(range(30000, 31000)))
    assert len(added) == 2000
    assert len(kernel.applied) == before + 1 and kernel.numbers == set(range(30000, 31000))
    items = [("0.0.0.0", p, proto) for p in range(30000, 30500) for proto in ("tcp", "udp")]
    items += [("0.0.0.0", p, "tcp") for p in range(30500, 31000)]  # their udp entries stay
    result = await service.bulk_delete(items)
    assert len(result.deleted) == 1500
    assert len(kernel.applied) == before + 2 and kernel.numbers == set(range(30500, 31000))


async def test_a_failed_save_leaves_the_reservation_as_the_store_is(make_service):
    service, store, kernel = await make_service(("0.0.0.0", 25565, "tcp"))
    store.fail_next = 1
    with pytest.raises(StorageError):
        await service.add("0.0.0.0", 40000, "tcp")
    assert kernel.numbers == {25565}
    store.fail_next = 1
    with pytest.raises(StorageError):
        await service.delete("0.0.0.0", 25565, "tcp")
    assert kernel.numbers == {25565}, "the entry is still in the store, so still reserved"
    assert ("0.0.0.0", 25565, "tcp") in service.pool
    await service.add("0.0.0.0", 40000, "tcp")  # and counting goes on from the store's truth
    await service.delete("0.0.0.0", 25565, "tcp")
    assert kernel.numbers == {40000}


async def test_a_delete_the_firewall_refuses_keeps_the_number(make_service):
    firewall = FakeFirewall()
    service, _, kernel = await make_service(("0.0.0.0", 25565, "tcp"), firewall=firewall)
    firewall.fail_next("close")
    with pytest.raises(Unavailable):
        await service.delete("0.0.0.0", 25565, "tcp")
    await service.add("0.0.0.0", 40000, "tcp")
    assert kernel.numbers == {25565, 40000}


async def test_a_failed_write_fails_nothing_and_the_next_change_writes_everything(make_service):
    service, store, kernel = await make_service()
    kernel.fail = 1
    await service.add("0.0.0.0", 40000, "tcp")  # the port is added all the same
    assert ("0.0.0.0", 40000, "tcp") in store.rows
    assert kernel.numbers == set()
    await service.add("0.0.0.0", 40001, "tcp")
    assert kernel.numbers == {40000, 40001}


async def test_changes_that_leave_the_numbers_as_they_were_write_nothing(make_service):
    service, _, kernel = await make_service(("0.0.0.0", 40000, "tcp"))
    before = len(kernel.applied)
    await service.add("0.0.0.0", 40000, "udp")
    await service.set_use("0.0.0.0", 40000, "tcp", True)
    await service.claim(1, ("udp",))
    assert len(kernel.applied) == before


async def test_turned_off_it_is_told_once_at_load_and_never_counted(make_service):
    kernel = FakeReservedPorts(enabled=False)
    service, _, _ = await make_service(("0.0.0.0", 25565, "tcp"), reserved=kernel)
    assert kernel.applied == [set()], "once, so that it can take back a previous run's numbers"
    await service.add("0.0.0.0", 40000, "tcp")
    await service.delete("0.0.0.0", 25565, "tcp")
    assert kernel.applied == [set()]


async def test_warnings_come_from_the_reservation(make_service):
    service, _, _ = await make_service()
    assert service.reserved.warnings([40000]) == ["ports [40000] are not reserved"]


async def test_resync_hands_the_numbers_over_again_without_a_change(make_service):
    service, _, kernel = await make_service(("0.0.0.0", 25565, "tcp"))
    service.reserved.resync()
    assert kernel.applied == [{25565}, {25565}]
