"""The SQLite store's writers (a child process by default, or a thread), against real files."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from lightd.adapters.sqlite_store import SqliteStore
from lightd.adapters.sqlite_writer import SqliteWriter
from lightd.bootstrap import build
from lightd.config import load_or_create
from lightd.core.changes import DeleteContainer, DeletePort, PutContainer, PutPort
from lightd.errors import InvalidInput, StorageError
from lightd.service.committer import ThreadWriter
from tests.conftest import HEADERS, write_test_config
from tests.e2e.daemon import running


def put(port: int, in_use: bool = False, note: str | None = None) -> PutPort:
    return PutPort("0.0.0.0", port, "tcp", in_use, None, note)


def rows(path: Path) -> dict[int, tuple[int, str | None]]:
    """What the file holds, through a connection of this process."""
    with sqlite3.connect(path) as db:
        return {port: (used, note) for port, used, note in
                db.execute("SELECT port, in_use, note FROM ports")}


@pytest.fixture
async def writer(tmp_path: Path):
    path = tmp_path / "lightd.sqlite3"
    store = SqliteStore(path)
    store.open()  # the daemon creates the file before it starts the writer
    store.close()
    writer = SqliteWriter(path)
    await writer.start()
    yield writer
    await writer.close()


async def wait_until_gone(pid: int, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if not running(pid):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"process {pid} is still running")


async def test_a_write_is_in_the_file_when_its_future_resolves(writer):
    await writer.write([put(25565, note="lobby"), put(25566, True)])
    assert rows(writer.path) == {25565: (0, "lobby"), 25566: (1, None)}
    await writer.write([DeletePort("0.0.0.0", 25565, "tcp"), PutContainer("c1", "{}")])
    assert rows(writer.path) == {25566: (1, None)}
    await writer.write([DeleteContainer("c1")])
    with sqlite3.connect(writer.path) as db:
        assert db.execute("SELECT count(*) FROM containers").fetchone() == (0,)


async def test_writes_in_flight_together_are_applied_in_order(writer):
    futures = [writer.write([put(30000, in_use=i % 2 == 1, note=str(i))]) for i in range(60)]
    await asyncio.gather(*futures)
    assert rows(writer.path) == {30000: (1, "59")}


async def test_a_transaction_larger_than_the_socket_buffers(writer):
    await writer.write([put(port) for port in range(1, 65536)])
    assert len(rows(writer.path)) == 65535


async def test_a_failed_transaction_applies_nothing_and_the_next_one_works(writer):
    await writer.write([put(1000)])
    # The schema refuses port 70000: the whole transaction, with its valid row, is refused.
    with pytest.raises(StorageError, match="CHECK constraint failed"):
        await writer.write([put(1001), PutPort("0.0.0.0", 70000, "tcp", False, None, None)])
    assert rows(writer.path) == {1000: (0, None)}
    await writer.write([put(1002)])
    assert rows(writer.path) == {1000: (0, None), 1002: (0, None)}


async def test_a_writer_killed_mid_transaction_fails_it_and_is_started_again(writer):
    await writer.write([put(2000)])
    first = writer.process
    os.kill(first.pid, signal.SIGSTOP)  # it cannot read the next transaction...
    pending = writer.write([put(2001)])
    await asyncio.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)  # ...and dies with it unanswered (a child we started)
    with pytest.raises(StorageError, match="writer process stopped"):
        await pending
    await writer.write([put(2002)])  # a new child
    assert writer.process.pid != first.pid
    assert rows(writer.path) == {2000: (0, None), 2002: (0, None)}


async def test_a_writer_that_died_while_idle_is_replaced_without_an_error(writer):
    first = writer.process
    os.kill(first.pid, signal.SIGKILL)
    await wait_until_gone(first.pid)
    await asyncio.sleep(0.05)  # the loop sees the socket close
    await writer.write([put(2100)])
    assert writer.process.pid != first.pid
    assert rows(writer.path) == {2100: (0, None)}


async def test_sigterm_to_the_writer_is_ignored_only_its_socket_ends_it(writer):
    # An init system signals the whole group; the daemon decides when its writer stops.
    os.kill(writer.process.pid, signal.SIGTERM)
    await asyncio.sleep(0.2)
    assert writer.process.poll() is None
    await writer.write([put(3000)])
    process = writer.process
    await writer.close()
    assert process.poll() == 0
    with pytest.raises(StorageError, match="stopping"):
        await writer.write([put(3001)])
    assert rows(writer.path) == {3000: (0, None)}


async def test_a_writer_that_cannot_open_the_database_says_why(tmp_path: Path):
    folder = tmp_path / "not-a-folder"
    folder.write_text("a file where the database folder should be")
    writer = SqliteWriter(folder / "lightd.sqlite3")
    with pytest.raises(StorageError, match="cannot open database"):
        await writer.start()
    await writer.close()


async def test_the_daemon_survives_its_writer_dying(client, daemon):
    """A change whose writer died answers 503 and leaves memory as the file; then all works."""
    pid = daemon.pool.writer.process.pid
    os.kill(pid, signal.SIGSTOP)
    change = asyncio.ensure_future(
        client.put("/network/ports/0.0.0.0/25565/use", json={"in_use": True}))
    for _ in range(500):  # until the change is with the (stopped) writer
        if daemon.pool.committer.busy:
            break
        await asyncio.sleep(0.01)
    assert daemon.pool.committer.busy
    os.kill(pid, signal.SIGKILL)  # the daemon's writer, started by this test's daemon
    response = await change
    assert response.status_code == 503
    assert "writer process stopped" in response.json()["error"]
    entry = (await client.get("/network/ports/0.0.0.0/25565")).json()
    assert entry["in_use"] is False
    response = await client.put("/network/ports/0.0.0.0/25565/use", json={"in_use": True},
                                headers=HEADERS)
    assert response.status_code == 200
    with sqlite3.connect(daemon.store.path) as db:
        assert db.execute("SELECT in_use FROM ports WHERE port = 25565 AND protocol = 'tcp'"
                          ).fetchone() == (1,)


async def test_storage_writer_thread_writes_from_a_thread_of_the_daemon(tmp_path: Path):
    settings = load_or_create(write_test_config(tmp_path, storage={"writer": "thread"}))
    lightd = build(settings)
    assert isinstance(lightd.pool.writer, ThreadWriter)
    await lightd.start()
    try:
        await lightd.pool.set_use("0.0.0.0", 25565, "tcp", True)
        assert rows(lightd.store.path)[25565] == (1, None)
    finally:
        await lightd.stop()


def test_storage_writer_defaults_to_the_process_and_refuses_unknown_values(tmp_path: Path):
    assert isinstance(build(load_or_create(write_test_config(tmp_path))).pool.writer, SqliteWriter)
    with pytest.raises(InvalidInput, match='storage.writer must be "process" or "thread"'):
        load_or_create(write_test_config(tmp_path, storage={"writer": "fork"}))  # as it is read
