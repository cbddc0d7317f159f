"""Group commit: concurrent changes share one durable transaction.

Handlers change the in-memory pool on the event loop (so check-and-change is atomic), then
``submit`` the matching changes and await the returned future. When no transaction is being
written, ``submit`` hands its changes to the store's writer at once; while one is being written,
new submissions collect and go together as the next one the moment it ends. So the disk is kept
busy while the loop goes on serving, and a lone change waits for nothing but its own fsync.

A *writer* carries each transaction to the store off the event loop: the SQLite store has a
process of its own by default (``lightd.adapters.sqlite_writer``); a ``ThreadWriter`` runs any
store's ``apply`` on a thread (``storage.writer: "thread"``, and the in-memory test store).

A submission may carry events of the stream (``PutEvent``): they are written in the same
transaction as the changes they tell of, and handed to ``on_durable`` once it is durable, in
order, before any of its futures resolves, so that no subscriber hears of a change before it is
saved, and none misses one that was.

A future resolves only once its changes are durable. If a transaction fails, it and everything
submitted after it fail together and ``on_failure`` rebuilds the in-memory state from the store
(the source of truth) before any other task runs.

A writer that does not answer within ``timeout`` seconds is *overdue*: every change waiting for
it fails at once ("not confirmed": the writer may still have committed it), ``abandon`` asks the
writer to give up on it (the process writer kills its child), and until the overdue transaction
is settled every new change and every read that would wait for one fails at once too. When it
settles, memory is rebuilt from the store whatever the outcome, because the clients were told
nothing either way. ``health()`` says whether storage works, for ``/api/v1/status``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from lightd.core.changes import Change, PutEvent
from lightd.errors import StorageError
from lightd.metrics import Metrics
from lightd.service.ports import Store

__all__ = ["DEFAULT_TIMEOUT", "Committer", "ThreadWriter"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0


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

    def abandon(self) -> None:
        """A thread cannot be stopped: its transaction settles whenever the store returns."""

    async def close(self) -> None:
        self._executor.shutdown(wait=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Committer:
    def __init__(
        self,
        write: Callable[[Sequence[Change]], asyncio.Future[None]],
        on_failure: Callable[[], None] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        abandon: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
        on_durable: Callable[[list[PutEvent]], None] | None = None,
    ) -> None:
        self._write = write
        self._on_durable = on_durable
        self._events: list[PutEvent] = []  # those of the changes not written yet
        self._metrics = metrics or Metrics.disabled()
        self._on_failure = on_failure
        self._timeout = timeout
        self._abandon = abandon
        self._changes: list[Change] = []
        self._waiters: list[asyncio.Future[None]] = []
        # Resolves when the transaction being written has been settled (or None: nothing is).
        self._inflight: asyncio.Future[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        # Resolves when the transaction in flight is settled or found overdue: what readers wait on.
        self._answered: asyncio.Future[None] | None = None
        # Why the transaction in flight is overdue (its waiters were failed), or None.
        self._overdue: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.transactions = 0
        self._unhealthy: tuple[str, str] | None = None  # (reason, since)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def submit(
        self, changes: Sequence[Change], events: Sequence[PutEvent] = ()
    ) -> asyncio.Future[None]:
        """Queue changes (and the events that tell of them) for a transaction; the future
        resolves once they are durable."""
        if self._closing or self._loop is None:
            raise StorageError("lightd is not running; the change was not saved")
        future: asyncio.Future[None] = self._loop.create_future()
        if self._overdue is not None:
            # Applied in memory already: the reload when the overdue write settles undoes it.
            future.set_exception(StorageError(
                f"the change was not saved: {self._overdue}; until it answers or is replaced "
                "(/api/v1/status), changes fail. Try again shortly"
            ))
            return future
        self._changes.extend(changes)
        if events:
            self._changes.extend(events)
            self._events.extend(events)
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

        Readers call this so they never report a change that a crash could still undo; they
        wait no longer than the writer's bound, then fail rather than report it.
        """
        if self._inflight is None:
            return
        self._refuse_read()
        # Changes not written yet wait for the transaction that will carry them; an empty
        # submission settles with it, and fails at once if it becomes overdue.
        future = self.submit(()) if self._waiters or self._answered is None else self._answered
        try:
            await asyncio.wait_for(asyncio.shield(future), self._timeout)
        except StorageError:
            pass  # a failed change was rolled back in memory too: what the reader sees is durable
        except TimeoutError:
            raise StorageError(
                f"the pool could not be read: changes before this read were not confirmed "
                f"within {self._timeout:g} s"
            ) from None
        self._refuse_read()

    def _refuse_read(self) -> None:
        if self._overdue is not None:
            raise StorageError(
                f"the pool cannot be read now: {self._overdue}, so memory may hold changes "
                "that are not saved; until it answers or is replaced (/api/v1/status), reads "
                "that wait for them fail. Try again shortly"
            )

    async def close(self) -> None:
        """Let everything submitted be written, then stop taking changes."""
        self._closing = True
        while self._inflight is not None:
            await asyncio.shield(self._inflight)

    def health(self) -> dict[str, Any]:
        """``healthy``, and while not, the ``reason`` and ``since`` when (ISO 8601, UTC)."""
        if self._unhealthy is None:
            return {"healthy": True, "reason": None, "since": None}
        reason, since = self._unhealthy
        return {"healthy": False, "reason": reason, "since": since}

    def _set_unhealthy(self, reason: str) -> None:
        since = _now() if self._unhealthy is None else self._unhealthy[1]
        self._unhealthy = (reason, since)

    def _flush(self) -> None:
        assert self._loop is not None
        changes, waiters, events = self._changes, self._waiters, self._events
        self._changes, self._waiters, self._events = [], [], []
        settled: asyncio.Future[None] = self._loop.create_future()
        self._inflight = settled
        if not changes:  # only barriers: everything before them is already durable
            self._settle(waiters, settled, None)
            return
        started = time.perf_counter()
        writing = self._write(changes)
        self._answered = self._loop.create_future()
        self._deadline = self._loop.call_later(self._timeout, self._overdue_now, waiters)
        writing.add_done_callback(
            lambda done: self._settle(
                waiters, settled, done.exception(), wrote=True, started=started,
                count=len(changes), events=events,
            )
        )

    def _wake_readers(self) -> None:
        answered, self._answered = self._answered, None
        if answered is not None and not answered.done():
            answered.set_result(None)

    def _overdue_now(self, waiters: list[asyncio.Future[None]]) -> None:
        """The writer has not answered in time: fail everything waiting, and give it up."""
        self._deadline = None
        self._wake_readers()
        self._overdue = (
            f"the store's writer has not confirmed a write within {self._timeout:g} s "
            f"(since {_now()})"
        )
        log.error("%s; failing the changes waiting for it", self._overdue)
        self._metrics.commit_failed()
        self._set_unhealthy(self._overdue)
        failure = StorageError(
            f"the change was not confirmed within {self._timeout:g} s: the store's writer did "
            "not answer, so lightd gives it up and rebuilds the pool from the database. The "
            "change may still have been saved: read the entry again to see"
        )
        waiters = waiters + self._waiters
        self._changes, self._waiters, self._events = [], [], []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(failure)
                waiter.exception()  # retrieved: a request that went away must not warn
        if self._abandon is not None:
            self._abandon()

    def _settle(
        self,
        waiters: list[asyncio.Future[None]],
        settled: asyncio.Future[None],
        error: BaseException | None,
        wrote: bool = False,
        started: float = 0.0,
        count: int = 0,
        events: list[PutEvent] | None = None,
    ) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._wake_readers()
        overdue, self._overdue = self._overdue, None
        if error is None:
            if wrote:
                self.transactions += 1
                self._unhealthy = None
                self._metrics.committed(time.perf_counter() - started, count)
            if events and overdue is None and self._on_durable is not None:
                # (Those of an overdue write are told by the reload, from the store.)
                self._on_durable(events)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            if overdue is not None and self._on_failure is not None:
                # Its clients were told "not confirmed", and changes made since were refused:
                # memory becomes what the store holds.
                self._on_failure()
        else:
            log.error("storage transaction failed, state reloaded from the store: %s", error)
            if overdue is None:  # an overdue one was counted when it became overdue
                self._metrics.commit_failed()
            failure = error if isinstance(error, StorageError) else StorageError(
                f"could not save the change: {error}"
            )
            self._set_unhealthy(f"the last write failed: {failure.message}")
            # Later submissions were applied in memory on top of the failed ones: fail them
            # too, then rebuild memory from the store, all in this one callback.
            waiters = waiters + self._waiters
            self._changes, self._waiters, self._events = [], [], []
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
