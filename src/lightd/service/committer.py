"""Group commit: concurrent changes share one durable transaction.

Handlers change the in-memory pool on the event loop (so check-and-change is atomic), then
``submit`` the matching changes and await the returned future. One flusher task hands everything
submitted so far to the store's thread as one transaction; while that transaction is being
written, new submissions collect for the next one. A future resolves only once its changes are
durable. If a transaction fails, it and everything submitted after it fail together and
``on_failure`` rebuilds the in-memory state from the store (the source of truth).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from lightd.core.changes import Change
from lightd.errors import StorageError

__all__ = ["Committer"]

log = logging.getLogger(__name__)


class Committer:
    def __init__(
        self,
        apply: Callable[[Sequence[Change]], None],
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._apply = apply
        self._on_failure = on_failure
        self._changes: list[Change] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._inflight: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="lightd-store")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.transactions = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lightd-committer")

    def submit(self, changes: Sequence[Change]) -> asyncio.Future[None]:
        """Queue changes for the next transaction; the future resolves once they are durable."""
        if self._closing:
            raise StorageError("lightd is shutting down; the change was not saved")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._changes.extend(changes)
        self._waiters.append(future)
        self._wake.set()
        return future

    @property
    def busy(self) -> bool:
        """Whether some submitted change is not durable yet."""
        return bool(self._waiters) or self._inflight is not None

    async def barrier(self) -> None:
        """Wait until everything submitted so far is durable (or was rolled back).

        Readers call this so they never report a change that a crash could still undo.
        """
        if self._waiters:
            future = self.submit(())
        elif self._inflight is not None:
            future = self._inflight
        else:
            return
        # A failed change was rolled back in memory too: what the reader sees next is durable.
        with contextlib.suppress(StorageError):
            await asyncio.shield(future)

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._waiters:
                if self._closing:
                    return
                continue
            changes, waiters = self._changes, self._waiters
            self._changes, self._waiters = [], []
            done: asyncio.Future[None] = loop.create_future()
            self._inflight = done
            try:
                if changes:
                    await loop.run_in_executor(self._executor, self._apply, changes)
                    self.transactions += 1
            except Exception as exc:
                log.error("storage transaction failed, state reloaded from the store: %s", exc)
                error = exc if isinstance(exc, StorageError) else StorageError(
                    f"could not save the change: {exc}"
                )
                # Later submissions were applied in memory on top of the failed ones: fail them
                # too, then rebuild memory from the store, all without yielding to other tasks.
                waiters += self._waiters
                self._changes, self._waiters = [], []
                if self._on_failure is not None:
                    self._on_failure()
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(error)
                        waiter.exception()  # retrieved: a cancelled request must not warn
            else:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
            finally:
                self._inflight = None
                done.set_result(None)
