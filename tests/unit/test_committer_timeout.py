"""The committer's bound on a writer that does not answer, with a writer the test controls."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from lightd.config import load_or_create
from lightd.core.changes import Change, DeletePort
from lightd.errors import InvalidInput, StorageError
from lightd.service.committer import DEFAULT_TIMEOUT, Committer
from tests.conftest import write_test_config

TIMEOUT = 0.05
CHANGE = [DeletePort("0.0.0.0", 1, "tcp")]


class HeldWriter:
    """Every write waits until the test answers it; ``abandon`` is recorded."""

    def __init__(self) -> None:
        self.writes: list[asyncio.Future[None]] = []
        self.abandoned = 0

    def write(self, changes: Sequence[Change]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.writes.append(future)
        return future

    def abandon(self) -> None:
        self.abandoned += 1


@pytest.fixture
async def held():
    writer = HeldWriter()
    reloads: list[int] = []
    committer = Committer(
        writer.write, on_failure=lambda: reloads.append(1), timeout=TIMEOUT, abandon=writer.abandon
    )
    committer.start()
    return committer, writer, reloads


async def test_an_unanswered_write_fails_not_confirmed_and_the_writer_is_abandoned(held):
    committer, writer, reloads = held
    first = committer.submit(CHANGE)
    queued = committer.submit(CHANGE)  # waits behind the first, applied in memory on top of it
    with pytest.raises(StorageError, match="not confirmed within 0.05 s"):
        await first
    with pytest.raises(StorageError, match="not confirmed"):
        await queued
    assert writer.abandoned == 1 and len(writer.writes) == 1
    health = committer.health()
    assert health["healthy"] is False and "not confirmed a write" in health["reason"]
    # Until it settles, changes and reads that would wait fail at once.
    with pytest.raises(StorageError, match="not saved"):
        await committer.submit(CHANGE)
    with pytest.raises(StorageError, match="cannot be read now"):
        await committer.barrier()
    assert reloads == []
    # It answers late (a thread writer finishing): memory is rebuilt from the store anyway.
    writer.writes[0].set_result(None)
    await asyncio.sleep(0)
    assert reloads == [1] and not committer.busy
    assert committer.health()["healthy"] is True
    later = committer.submit(CHANGE)
    writer.writes[1].set_result(None)
    await later


async def test_a_read_waits_for_a_slow_write_no_longer_than_the_bound(held):
    committer, writer, _ = held
    committer.submit(CHANGE).add_done_callback(lambda done: done.exception())
    with pytest.raises(StorageError, match="cannot be read now"):
        await committer.barrier()


async def test_a_read_during_a_write_answered_in_time_sees_it_durable(held):
    committer, writer, _ = held
    change = committer.submit(CHANGE)
    reading = asyncio.ensure_future(committer.barrier())
    await asyncio.sleep(0)
    assert not reading.done()
    writer.writes[0].set_result(None)
    await reading
    await change
    assert committer.health()["healthy"] is True and committer.transactions == 1


async def test_a_failed_write_makes_storage_unhealthy_until_one_succeeds(held):
    committer, writer, reloads = held
    failing = committer.submit(CHANGE)
    writer.writes[0].set_exception(StorageError("could not save the change: disk I/O error"))
    with pytest.raises(StorageError):
        await failing
    health = committer.health()
    assert health == {
        "healthy": False,
        "since": health["since"],
        "reason": "the last write failed: could not save the change: disk I/O error",
    }
    assert health["since"] and reloads == [1]
    working = committer.submit(CHANGE)
    writer.writes[1].set_result(None)
    await working
    assert committer.health() == {"healthy": True, "reason": None, "since": None}


@pytest.mark.parametrize("bad", [0, -1, "5", True, None])
def test_storage_write_timeout_is_a_positive_number_of_seconds(tmp_path, bad):
    path = write_test_config(tmp_path, storage={"write_timeout": bad})
    if bad is None:  # null takes the default
        assert load_or_create(path).storage.write_timeout == DEFAULT_TIMEOUT == 5
        return
    with pytest.raises(InvalidInput, match="storage.write_timeout must be a number of seconds"):
        load_or_create(path)  # refused as the file is read, before anything is built
