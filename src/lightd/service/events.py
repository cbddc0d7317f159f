"""The event stream: one event per change, told only once the change is durable.

An event is made (:meth:`EventHub.record`) with the change it tells of and saved in the same
transaction (the committer's ``events``); the committer hands it back (:meth:`EventHub.durable`)
once that transaction is durable, and only then do subscribers see it. Ids increase with every
event made; a transaction that fails leaves a gap, never a reused id.

The newest ``backlog`` events stay in the database, so a subscriber that reconnects with the last
id it saw gets everything after it, across restarts too. The newest few thousand are also kept in
memory, encoded once for every subscriber: a subscriber that is up to date (nearly all of them)
reads from there, one that is far behind reads pages of the database from a worker thread. A
subscriber holds no queue of its own, only its place (the last id it sent), so a slow one costs
no memory: the server drops a connection that does not take what is written to it in time
(``lightd.api.server``), and one that fell behind the backlog gets ``reset`` and starts again
from now.

Subscribers are woken together, by one tick of the hub: at most every ``FLUSH_EVERY`` seconds
while events come (the first of a quiet spell at once), and every ``heartbeat`` seconds when
none do (then each sends a heartbeat comment). So a burst of thousands of changes a second costs
each subscriber ten wake-ups and writes a second, and no timer of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, Protocol

import orjson

from lightd.core.changes import PutEvent, TrimEvents
from lightd.core.leases import rfc3339
from lightd.errors import StorageError

__all__ = ["DEFAULT_BACKLOG", "DEFAULT_HEARTBEAT", "EventHub", "EventSource"]

log = logging.getLogger(__name__)

DEFAULT_BACKLOG = 10_000
DEFAULT_HEARTBEAT = 15.0
FLUSH_EVERY = 0.1  # seconds between two wake-ups of the subscribers while events come
RING_EVENTS = 4096  # the newest events kept in memory, encoded
RING_BYTES = 16 << 20
PAGE = 256  # events per read of the database's backlog
CHUNK_BYTES = 256 << 10  # at most this much is written to a subscriber at once
TRIM_EVERY = 64  # ids between two trims of the backlog
CONNECTED = b": connected\n\n"
HEARTBEAT = b": heartbeat\n\n"


class EventSource(Protocol):
    """What the hub reads of the store (the SQLite store is one)."""

    def event_bounds(self) -> tuple[int, int]: ...

    def read_events(self, after: int, limit: int) -> list[tuple[int, str, str]]: ...


def encode(event_id: int, kind: str, data: str) -> bytes:
    """One event as text/event-stream: ``data`` is one line of JSON (orjson writes no newline)."""
    return f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n".encode()


class EventHub:
    def __init__(
        self,
        source: EventSource,
        backlog: int = DEFAULT_BACKLOG,
        heartbeat: float = DEFAULT_HEARTBEAT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.backlog = backlog
        self.heartbeat = heartbeat
        self.clock = clock
        self.last_id = 0  # the newest event told (durable)
        self._next_id = 1
        # Events with ids up to this one may be gone from the backlog: after it, none is.
        self.floor = 0
        self._ring: deque[tuple[int, bytes]] = deque()
        self._ring_bytes = 0
        self._ring_floor = 0  # every durable event after this id is in the ring
        # Resolved to wake every subscriber: True when events came, False for a heartbeat.
        self._tick: asyncio.Future[bool] | None = None
        self._flush: asyncio.TimerHandle | None = None
        self._last_flush = float("-inf")  # loop time
        self._heartbeats: asyncio.TimerHandle | None = None
        # The last chunk made from the ring: (after, last_id then) -> (bytes, up to id). The
        # subscribers woken by one tick nearly all stand at the same place, so all but the first
        # send the same bytes, made once.
        self._made: tuple[tuple[int, int], tuple[bytes, int]] | None = None
        self.subscribers = 0
        self.published = 0
        self.closed = False
        self.on_publish: Callable[[list[PutEvent]], None] | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def load(self) -> None:
        """Take up the numbering where the database left it (at start-up)."""
        oldest, newest = self.source.event_bounds()
        self.last_id = max(self.last_id, newest)
        self._next_id = max(self._next_id, newest + 1)
        self.floor = max(self.floor, oldest - 1 if oldest else newest)
        self._ring.clear()
        self._ring_bytes = 0
        self._ring_floor = self.last_id

    def resync(self) -> None:
        """After memory was rebuilt from the store: tell the events it holds that were never
        told (those of a write given up as overdue, which may have been saved after all)."""
        try:
            rows = self.source.read_events(self.last_id, PAGE)
        except StorageError as exc:
            log.error("events after %d not read back from the store: %s", self.last_id, exc.message)
            return
        while rows:
            self.durable([PutEvent(*row) for row in rows])
            rows = self.source.read_events(self.last_id, PAGE) if len(rows) == PAGE else []

    # -- making and telling ------------------------------------------------------------------

    def record(self, kind: str, data: Mapping[str, Any]) -> PutEvent:
        """A new event (the next id), to be saved with its change."""
        event_id = self._next_id
        self._next_id += 1
        body = orjson.dumps({"at": rfc3339(self.clock(), milliseconds=True), **data},
                            default=str).decode()
        return PutEvent(event_id, kind, body)

    def trim(self, events: list[PutEvent]) -> TrimEvents | None:
        """The trim of the backlog to save with ``events``, every ``TRIM_EVERY`` ids."""
        last = events[-1].id
        if last // TRIM_EVERY == (events[0].id - 1) // TRIM_EVERY:
            return None
        below = last - self.backlog + 1
        if below <= 1:
            return None
        # Told from now on: a reconnect with an older id gets reset (if the trim fails, only
        # sooner than it needed to).
        self.floor = max(self.floor, below - 1)
        return TrimEvents(below)

    def durable(self, events: list[PutEvent]) -> None:
        """``events`` are saved: tell them (the committer calls this, in id order)."""
        for event in events:
            if event.id <= self.last_id:
                continue
            chunk = encode(event.id, event.type, event.data)
            self._ring.append((event.id, chunk))
            self._ring_bytes += len(chunk)
            self.last_id = event.id
            self.published += 1
        while self._ring and (len(self._ring) > RING_EVENTS or self._ring_bytes > RING_BYTES):
            dropped, chunk = self._ring.popleft()
            self._ring_bytes -= len(chunk)
            self._ring_floor = dropped
        if self.on_publish is not None:
            self.on_publish(events)
        if self._tick is not None and self._flush is None:
            loop = asyncio.get_running_loop()
            at = max(loop.time(), self._last_flush + FLUSH_EVERY)
            self._flush = loop.call_at(at, self._wake, True)

    def _wake(self, came: bool) -> None:
        if came:
            self._flush = None
            self._last_flush = asyncio.get_running_loop().time()
        tick, self._tick = self._tick, None
        if tick is not None and not tick.done():
            tick.set_result(came)

    def _beat(self) -> None:
        """Every ``heartbeat`` seconds while anyone listens: a tick that says no event came."""
        self._heartbeats = None
        if self.subscribers and not self.closed:
            self._wake(False)
            self._heartbeats = asyncio.get_running_loop().call_later(self.heartbeat, self._beat)

    def close(self) -> None:
        """End every stream (the daemon is stopping): each sends what it has, then ends."""
        self.closed = True
        for timer in (self._flush, self._heartbeats):
            if timer is not None:
                timer.cancel()
        self._flush = self._heartbeats = None
        self._wake(True)

    # -- following ---------------------------------------------------------------------------

    def reset_needed(self, after: int) -> bool:
        """Whether a subscriber that saw ``after`` cannot be told everything since."""
        return after > self.last_id or after < self.floor

    def reset(self, after: int) -> bytes:
        data = orjson.dumps({
            "at": rfc3339(self.clock(), milliseconds=True),
            "reason": (
                f"event {after} is newer than the last one ({self.last_id})"
                if after > self.last_id
                else f"events after {after} are no longer kept (the backlog keeps the newest "
                f"{self.backlog}); read the pool again"
            ),
            "after": after,
            "oldest": self.floor + 1,
            "last": self.last_id,
        }).decode()
        return encode(self.last_id, "reset", data)

    async def follow(self, after: int | None) -> AsyncGenerator[bytes]:
        """What one subscriber is sent, as chunks of bytes, for as long as it listens: a
        comment, ``reset`` if ``after`` cannot be caught up, then every event after ``after``
        (after now when None), and a heartbeat comment every ``heartbeat`` seconds when no
        event came."""
        self.subscribers += 1
        if self._heartbeats is None and not self.closed:
            self._heartbeats = asyncio.get_running_loop().call_later(self.heartbeat, self._beat)
        try:
            yield CONNECTED
            cursor = self.last_id if after is None else after
            if after is not None and self.reset_needed(after):
                yield self.reset(after)
                cursor = self.last_id
            while not self.closed or cursor < self.last_id:
                if cursor >= self.last_id and not await self._wait():
                    yield HEARTBEAT
                    continue
                chunk, cursor = await self._after(cursor)
                if chunk:
                    yield chunk
        finally:
            self.subscribers -= 1

    async def _wait(self) -> bool:
        """Wait for the next tick: True when events came (or the hub closed), False for a
        heartbeat."""
        if self.closed:
            return True
        if self._tick is None:
            self._tick = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._tick)

    async def _after(self, cursor: int) -> tuple[bytes, int]:
        """The events after ``cursor`` (as many as fit a chunk), and the id of the last one."""
        if cursor < self.floor:  # trimmed while this subscriber was behind
            return self.reset(cursor), self.last_id
        if cursor >= self._ring_floor:
            key = (cursor, self.last_id)
            made = self._made
            if made is not None and made[0] == key:
                return made[1]
            newer: list[tuple[int, bytes]] = []
            for event in reversed(self._ring):  # the new ones are at the end: O(new ones)
                if event[0] <= cursor:
                    break
                newer.append(event)
            newer.reverse()
            picked: list[bytes] = []
            size = 0
            for event_id, chunk in newer:
                if picked and size + len(chunk) > CHUNK_BYTES:
                    break
                picked.append(chunk)
                size += len(chunk)
                cursor = event_id
            answer = (b"".join(picked), cursor)
            self._made = (key, answer)
            return answer
        rows = await asyncio.to_thread(self.source.read_events, cursor, PAGE)
        if cursor < self.floor:
            return self.reset(cursor), self.last_id
        if not rows:
            return b"", max(cursor, self._ring_floor)
        return b"".join(encode(*row) for row in rows), rows[-1][0]
