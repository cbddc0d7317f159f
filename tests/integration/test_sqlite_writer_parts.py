"""Big transactions go to the writer's child in several frames, and are still all or nothing.

The child is the real one (``python -m lightd.adapters.sqlite_child``) on a real SQLite file:
driven over its socket frame by frame here, and through :class:`SqliteWriter` as the daemon
uses it.
"""

from __future__ import annotations

import asyncio
import fcntl
import marshal
import os
import select
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from lightd.adapters import sqlite_writer
from lightd.adapters.sqlite_child import LENGTH, MORE, encode
from lightd.adapters.sqlite_store import SqliteStore
from lightd.adapters.sqlite_writer import PART, SqliteWriter
from lightd.core.changes import Change, PutPort
from lightd.errors import StorageError
from tests.e2e.daemon import running


def put(port: int, note: str | None = None) -> PutPort:
    return PutPort("0.0.0.0", port, "tcp", False, None, note)


def ports_in(path: Path) -> dict[int, str | None]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT port, note FROM ports"))


def parts_of(changes: Sequence[Change]) -> list[bytes]:
    """The frames the writer sends for ``changes``: PART at a time, MORE on all but the last."""
    starts = range(0, len(changes), PART)
    return [encode(changes[s : s + PART], more=s + PART < len(changes)) for s in starts]


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "lightd.sqlite3"
    store = SqliteStore(path)
    store.open()  # the daemon creates the file before it starts the writer
    store.close()
    return path


class Child:
    """The writer's child process, spoken to directly over a blocking socket."""

    def __init__(self, path: Path) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lightd.adapters.sqlite_child", str(theirs.fileno()), str(path)],
            stdin=subprocess.DEVNULL,
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        assert self.answer(timeout=30) is None  # the database is open

    def send(self, frames: list[bytes]) -> None:
        self.sock.sendall(b"".join(frames))

    def answer(self, timeout: float = 30.0) -> object:
        self.sock.settimeout(timeout)
        head = self._exactly(LENGTH.size)
        return marshal.loads(self._exactly(LENGTH.unpack(head)[0]))

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, "the child closed its socket"
            data += chunk
        return data

    def wait_until_read(self) -> None:
        """Until the child has taken every byte sent off the socket (none left unread)."""
        deadline = time.monotonic() + 30
        unread = struct.pack("i", 0)
        while struct.unpack("i", fcntl.ioctl(self.sock, termios.TIOCOUTQ, unread))[0]:
            assert time.monotonic() < deadline, "the child does not read its socket"
            time.sleep(0.01)

    def answers_within(self, seconds: float) -> bool:
        return bool(select.select([self.sock], [], [], seconds)[0])

    def stop(self) -> None:
        self.sock.close()
        if self.process.poll() is None:
            self.process.kill()  # the child this test started
        self.process.wait(30)


@pytest.fixture
def child(database: Path) -> Iterator[Child]:
    started = Child(database)
    yield started
    started.stop()


def test_a_transaction_in_several_frames_is_applied_once_its_last_frame_is_in(child, database):
    changes = [put(port, "big") for port in range(1, 3 * PART + 6)]
    frames = parts_of(changes)
    assert len(frames) == 4
    assert [bool(LENGTH.unpack_from(f)[0] & MORE) for f in frames] == [True, True, True, False]
    child.send(frames)
    assert child.answer() is None
    assert ports_in(database) == {port: "big" for port in range(1, 3 * PART + 6)}


def test_a_child_killed_between_frames_leaves_nothing_of_the_transaction(child, database):
    child.send(parts_of([put(7)]))
    assert child.answer() is None
    frames = parts_of([put(port) for port in range(100, 100 + 3 * PART + 6)])
    child.send(frames[:-1])
    child.wait_until_read()
    # It has read three parts of four: it must neither apply them nor answer for them.
    assert not child.answers_within(0.3)
    assert ports_in(database) == {7: None}
    child.process.send_signal(signal.SIGKILL)
    assert child.process.wait(30) == -signal.SIGKILL
    assert ports_in(database) == {7: None}


def test_a_parent_gone_between_frames_leaves_nothing_of_the_transaction(child, database):
    frames = parts_of([put(port) for port in range(100, 100 + 2 * PART + 1)])
    child.send(frames[:-1])
    child.wait_until_read()
    child.sock.close()  # as when the daemon dies: the child sees the socket end, and leaves
    assert child.process.wait(30) == 0
    assert ports_in(database) == {}


def test_a_transaction_in_frames_that_fails_applies_nothing_and_the_next_one_is_whole(child, database):
    # The schema refuses port 70000, in the last part: the valid parts before it go too.
    bad = [put(port) for port in range(1, 2 * PART + 1)]
    bad.append(PutPort("0.0.0.0", 70000, "tcp", False, None, None))
    child.send(parts_of(bad))
    assert "CHECK constraint failed" in str(child.answer())
    assert ports_in(database) == {}
    # Nothing of the failed transaction is kept for the next one, in frames or in one.
    child.send(parts_of([put(port) for port in range(5000, 5000 + PART + 1)]))
    assert child.answer() is None
    child.send(parts_of([put(9)]))
    assert child.answer() is None
    assert ports_in(database) == {9: None} | {port: None for port in range(5000, 5000 + PART + 1)}


@pytest.fixture
async def writer(database: Path):
    started = SqliteWriter(database)
    await started.start()
    yield started
    await started.close()


@pytest.fixture
def frames_encoded(monkeypatch) -> list[tuple[int, bool]]:
    """Every frame the writer encodes, as (changes, more follow): it calls the real encoder."""
    seen: list[tuple[int, bool]] = []

    def recording(changes: Sequence[Change], more: bool = False) -> bytes:
        seen.append((len(changes), more))
        return encode(changes, more)

    monkeypatch.setattr(sqlite_writer, "encode", recording)
    return seen


async def test_a_small_transaction_is_one_frame_sent_at_once(writer, frames_encoded):
    future = writer.write([put(port) for port in range(1, PART + 1)])
    assert frames_encoded == [(PART, False)]  # before write() returned: no turn of the loop
    await future
    assert len(ports_in(writer.path)) == PART


async def test_a_big_transaction_is_encoded_a_frame_per_turn_of_the_loop(writer, frames_encoded):
    changes = [put(port, "claimed") for port in range(1, 3 * PART + 6)]
    future = writer.write(changes)
    changes.clear()  # the caller's list may change once write() returned: the writer kept a copy
    seen_by_others: list[int] = []

    def other_callback() -> None:  # as a request would run meanwhile
        seen_by_others.append(len(frames_encoded))
        if not future.done():
            asyncio.get_running_loop().call_soon(other_callback)

    asyncio.get_running_loop().call_soon(other_callback)
    await future
    assert frames_encoded == [(PART, True)] * 3 + [(5, False)]
    assert seen_by_others[:4] == [1, 2, 3, 4]  # the loop ran other work between the frames
    assert ports_in(writer.path) == {port: "claimed" for port in range(1, 3 * PART + 6)}


async def test_transactions_written_while_a_big_one_is_encoded_follow_it_in_order(writer):
    big = writer.write([put(port, "first") for port in range(1, 2 * PART + 1)])
    after = [writer.write([put(port, f"then {port}")]) for port in (1, 2 * PART, 2 * PART + 1)]
    await asyncio.gather(big, *after)
    expected = {port: "first" for port in range(1, 2 * PART + 1)}
    expected |= {port: f"then {port}" for port in (1, 2 * PART, 2 * PART + 1)}
    assert ports_in(writer.path) == expected


async def test_a_writer_killed_between_frames_fails_the_transaction_and_is_replaced(writer):
    await writer.write([put(1)])
    first = writer.process
    pending = writer.write([put(port) for port in range(100, 100 + 4 * PART)])
    await asyncio.sleep(0)  # one turn: its first frame is sent, the others are not encoded yet
    os.kill(first.pid, signal.SIGKILL)  # the child this test's writer started
    with pytest.raises(StorageError, match="writer process stopped"):
        await pending
    for _ in range(500):
        if not running(first.pid):
            break
        await asyncio.sleep(0.01)
    assert ports_in(writer.path) == {1: None}
    await writer.write([put(port) for port in range(200, 200 + PART + 1)])  # a new child
    assert writer.process.pid != first.pid
    assert ports_in(writer.path) == {1: None} | {port: None for port in range(200, 201 + PART)}


async def test_a_writer_closed_while_it_sends_a_big_transaction_sends_it_whole_first(database):
    writer = SqliteWriter(database)
    await writer.start()
    pending = writer.write([put(port) for port in range(1, 3 * PART + 1)])
    await writer.close()  # as at shutdown, right after a big claim was written
    assert pending.done() and pending.exception() is None
    assert len(ports_in(database)) == 3 * PART
