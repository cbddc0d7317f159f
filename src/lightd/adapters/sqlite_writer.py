"""The SQLite store's transactions, written by a child process of the daemon.

Why a process and not a thread: a writer thread must take the GIL back after every SQLite call,
and while the event loop is busy serving, that wait (up to the interpreter's switch interval) is
longer than the transaction itself. Under 64 concurrent claims a thread spent more time waiting
for the GIL than writing and syncing. A process has a GIL of its own; the loop only hands it
bytes and reads the answers, both without blocking.

The two talk over a socketpair; the wire format and the child's loop are in
:mod:`lightd.adapters.sqlite_child`, which imports no asyncio so the child starts quickly.

A transaction of up to ``PART`` changes (nearly all of them) is encoded and sent at once, as one
frame. A bigger one (a claim or a bulk add of tens of thousands of entries) would hold the event
loop for a tenth of a second while it is encoded, so it goes as several frames of ``PART``
changes, one encoded per turn of the loop; the child applies it, in one SQLite transaction, only
once its last frame is in. Transactions are sent in the order they were written: one written
while a big one is still being encoded waits behind it.

The child ignores SIGINT and SIGTERM (a Ctrl-C or an init system signals the whole group): it
leaves when its socket closes, after the transaction it is writing, so a daemon that stops or dies
never leaves one half done, and never leaves the child behind.
"""

from __future__ import annotations

import asyncio
import collections
import marshal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lightd.adapters.sqlite_child import LENGTH, READ_SIZE, encode
from lightd.core.changes import Change
from lightd.errors import StorageError

__all__ = ["SqliteWriter"]

_EXIT_WAIT = 10.0
# Changes per frame of a big transaction: encoding one takes the loop about 1-3 ms.
PART = 1024


class SqliteWriter:
    """Applies transactions to ``path`` in a child process, in the order they were written.

    ``write`` returns a future that resolves once the transaction is durable, or fails with
    StorageError when nothing of it was applied (an SQLite error, or the child gone). A child that
    died is started again by the next ``write``. A big transaction is sent in parts over several
    turns of the loop (see the module docstring); it is still one transaction, all or nothing.
    """

    def __init__(self, path: Path, python: str = sys.executable) -> None:
        self.path = path
        self.python = python
        self.process: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._outgoing = bytearray()
        # Transactions written but not encoded yet, with how many of their changes are.
        self._queued: collections.deque[tuple[list[Change], int]] = collections.deque()
        self._encoder: asyncio.Handle | None = None  # the next turn's _encode_part
        self._incoming = bytearray()
        self._pending: collections.deque[asyncio.Future[None]] = collections.deque()
        self._waiting_to_send = False
        self._closed = False
        self._last_error: str | None = None
        self._reaping: set[asyncio.Task[None]] = set()
        self._killed: int | None = None  # the pid abandon() killed

    async def start(self) -> None:
        """Start the child and wait until it has the database open."""
        self._loop = asyncio.get_running_loop()
        await self._spawn()

    def write(self, changes: Sequence[Change]) -> asyncio.Future[None]:
        assert self._loop is not None, "SqliteWriter.start() was not called"
        future: asyncio.Future[None] = self._loop.create_future()
        if self._closed:
            future.set_exception(StorageError("lightd is stopping; the change was not saved"))
            return future
        if self._sock is None:  # the child died: start another, then send
            try:
                ready = self._spawn()
            except StorageError as exc:
                future.set_exception(exc)
                return future
            ready.add_done_callback(lambda done: done.exception())  # failures reach `future`
        self._pending.append(future)
        if len(changes) <= PART and not self._queued:
            self._outgoing += encode(changes)
            self._send()
        else:
            # A copy: the caller's list may change while the parts are encoded, turn by turn.
            self._queued.append((list(changes), 0))
            if self._encoder is None:
                self._encoder = self._loop.call_soon(self._encode_part)
        return future

    def abandon(self) -> None:
        """Kill a child that does not answer (SIGKILL ends a stopped child too).

        Its unanswered writes fail when its socket closes, which the kernel does only as the
        child exits, after any write of its own: memory is then rebuilt from a file no one
        changes any more. It is reaped in the background; the next write starts a new child.
        """
        process = self.process
        if self._sock is None or process is None or process.poll() is not None:
            return
        self._killed = process.pid
        process.kill()

    async def close(self) -> None:
        """Let the child finish what it was sent, then wait for it to exit."""
        self._closed = True
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        self._disconnect()
        if self.process is not None:
            await self._reap(self.process)
        if self._reaping:
            await asyncio.gather(*self._reaping)

    # -- the parent's side of the socket -------------------------------------------------------

    def _spawn(self) -> asyncio.Future[None]:
        assert self._loop is not None
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                [self.python, "-m", "lightd.adapters.sqlite_child", str(child.fileno()),
                 str(self.path)],
                stdin=subprocess.DEVNULL,
                pass_fds=(child.fileno(),),
            )
        except OSError as exc:
            parent.close()
            raise StorageError(f"cannot start the store's writer process: {exc}") from exc
        finally:
            child.close()
        parent.setblocking(False)
        self._sock = parent
        self._incoming.clear()
        self._outgoing.clear()
        self._loop.add_reader(parent.fileno(), self._receive)
        ready: asyncio.Future[None] = self._loop.create_future()
        self._pending.appendleft(ready)  # the child's first answer: the database is open
        return ready

    def _encode_part(self) -> None:
        """Encode and send the next frame of the oldest queued transaction; the next one in
        the loop's next turn, so other callbacks (requests) run in between."""
        self._encoder = None
        changes, start = self._queued[0]
        end = start + PART
        more = end < len(changes)
        self._outgoing += encode(changes[start:end], more)
        if more:
            self._queued[0] = (changes, end)
        else:
            self._queued.popleft()
        self._send()  # if the child is lost now, the queue is cleared: nothing more to do
        if self._queued and self._loop is not None:
            self._encoder = self._loop.call_soon(self._encode_part)

    def _send(self) -> None:
        sock = self._sock
        assert sock is not None and self._loop is not None
        while self._outgoing:
            try:
                sent = sock.send(self._outgoing)
            except (BlockingIOError, InterruptedError):
                if not self._waiting_to_send:
                    self._loop.add_writer(sock.fileno(), self._send)
                    self._waiting_to_send = True
                return
            except OSError as exc:
                self._lost(f"cannot write to it: {exc}")
                return
            del self._outgoing[:sent]
        if self._waiting_to_send:
            self._loop.remove_writer(sock.fileno())
            self._waiting_to_send = False

    def _receive(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(f"cannot read from it: {exc}")
            return
        if not data:
            self._lost("it exited")
            return
        incoming = self._incoming
        incoming += data
        while len(incoming) >= LENGTH.size:
            (size,) = LENGTH.unpack_from(incoming)
            end = LENGTH.size + size
            if len(incoming) < end:
                break
            answer = marshal.loads(incoming[LENGTH.size:end])
            del incoming[:end]
            future = self._pending.popleft()
            if answer is None:
                future.set_result(None)
            else:
                self._last_error = str(answer)
                future.set_exception(StorageError(str(answer)))

    def _lost(self, why: str) -> None:
        """The child is gone or unreachable: fail what it had not answered."""
        self._disconnect()
        code = None if self.process is None else self.process.poll()
        if self.process is not None and code is None and self._loop is not None:
            # Still exiting: wait for it in the background, so it never lingers as a zombie.
            task = self._loop.create_task(self._reap(self.process))
            self._reaping.add(task)
            task.add_done_callback(self._reaping.discard)
        if self.process is not None and self._killed == self.process.pid:
            why = "it did not answer in time, so lightd killed it"
        message = f"the store's writer process stopped ({why}"
        message += "" if code is None else f", exit code {code}"
        message += f"; last error: {self._last_error})" if self._last_error else ")"
        pending, self._pending = self._pending, collections.deque()
        for future in pending:
            if not future.done():
                # It may have died after its commit and before its answer: say so, not "lost".
                future.set_exception(StorageError(
                    f"the change was not confirmed: {message}. lightd reloaded the pool from the "
                    "database, so reading the entry shows whether it was saved"
                ))

    def _disconnect(self) -> None:
        # What was queued for this child goes with it (its futures are failed, or answered).
        self._queued.clear()
        if self._encoder is not None:
            self._encoder.cancel()
            self._encoder = None
        sock, self._sock = self._sock, None
        if sock is None or self._loop is None:
            return
        self._loop.remove_reader(sock.fileno())
        if self._waiting_to_send:
            self._loop.remove_writer(sock.fileno())
            self._waiting_to_send = False
        sock.close()  # the child sees end of file and exits

    @staticmethod
    async def _reap(process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + _EXIT_WAIT
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if process.poll() is None:  # pragma: no cover - a child stuck in a write
            process.kill()
            process.wait()
