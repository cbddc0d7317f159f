"""Group commit: concurrent changes share one durable transaction.

Handlers change the in-memory pool on the event loop (so check-and-change is atomic), then
``submit`` the matching changes and await the returned future. When no transaction is being
written, ``submit`` hands its changes to the store's writer at once; while one is being written,
new submissions collect and go together as the next one the moment it ends. So the disk is kept
busy while the loop goes on serving, and a lone change waits for nothing but its own fsync.

A *writer* carries each transaction to the store off the event loop: the SQLite store has a
process of its own by default (``lightd.adapters.sqlite_writer``); a ``ThreadWriter`` runs any
store's ``apply`` on a thread (``storage.writer: "thread"``, and the in-memory test store).

A future resolves only once its changes are durable. If a transaction fails, it and everything
submitted after it fail together and ``on_failure`` rebuilds the in-memory state from the store
(the source of truth) before any other task runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from lightd.core.changes import Change
from lightd.errors import StorageError
from lightd.service.ports import Store

__all__ = ["Committer", "ThreadWriter"]

log = logging.getLogger(__name__)


class ThreadWriter:
    """Applies a store's transactions on one thread of its own, in order."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="lightd-store")
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def write(self, changes: Sequence[Change]) -> asyncio.Future[None]:
        assert self._loop is not None, "ThreadWriter.start() was not called"
        return self._loop.run_in_executor(self._executor, self.store.apply, changes)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)


class Committer:
    def __init__(
        self,
        write: Callable[[Sequence[Change]], asyncio.Future[None]],
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._write = write
        self._on_failure = on_failure
        self._changes: list[Change] = []
        self._waiters: list[asyncio.Future[None]] = []
        # Resolves when the transaction being written has been settled (or None: nothing is).
        self._inflight: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.transactions = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def submit(self, changes: Sequence[Change]) -> asyncio.Future[None]:
        """Queue changes for a transaction; the future resolves once they are durable."""
        if self._closing or self._loop is None:
            raise StorageError("lightd is not running; the change was not saved")
        future: asyncio.Future[None] = self._loop.create_future()
        self._changes.extend(changes)
        self._waiters.append(future)
        if self._inflight is None:
            self._flush()
        return future

    @property
    def busy(self) -> bool:
        """Whether some submitted change is not durable yet."""
        return self._inflight is not None

    async def barrier(self) -> None:
        """Wait until everything submitted so far is durable (or was rolled back).

        Readers call this so they never report a change that a crash could still undo.
        """
        if self._inflight is None:
            return
        # Changes not written yet wait for the transaction that will carry them.
        future = self.submit(()) if self._waiters else self._inflight
        # A failed change was rolled back in memory too: what the reader sees next is durable.
        with contextlib.suppress(StorageError):
            await asyncio.shield(future)

    async def close(self) -> None:
        """Let everything submitted be written, then stop taking changes."""
        self._closing = True
        while self._inflight is not None:
            await asyncio.shield(self._inflight)

    def _flush(self) -> None:
        assert self._loop is not None
        changes, waiters = self._changes, self._waiters
        self._changes, self._waiters = [], []
        settled: asyncio.Future[None] = self._loop.create_future()
        self._inflight = settled
        if not changes:  # only barriers: everything before them is already durable
            self._settle(waiters, settled, None)
            return
        writing = self._write(changes)
        writing.add_done_callback(
            lambda done: self._settle(waiters, settled, done.exception())
        )

    def _settle(
        self,
        waiters: list[asyncio.Future[None]],
        settled: asyncio.Future[None],
        error: BaseException | None,
    ) -> None:
        if error is None:
            self.transactions += 1
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        else:
            log.error("storage transaction failed, state reloaded from the store: %s", error)
            failure = error if isinstance(error, StorageError) else StorageError(
                f"could not save the change: {error}"
            )
            # Later submissions were applied in memory on top of the failed ones: fail them
            # too, then rebuild memory from the store, all in this one callback.
            waiters = waiters + self._waiters
            self._changes, self._waiters = [], []
            if self._on_failure is not None:
                self._on_failure()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(failure)
                    waiter.exception()  # retrieved: a request that went away must not warn
        self._inflight = None
        settled.set_result(None)
        if self._waiters:
            self._flush()
