"""``GET /network/events``: the event stream (text/event-stream) of lightd.service.events."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

from fastapi import FastAPI, Query
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from lightd.core.entry import parse_bounded
from lightd.service.events import EventHub

__all__ = ["EVENT_STREAM", "MAX_EVENT_ID", "EventStream", "add_event_routes"]

EVENT_STREAM = "text/event-stream"
MAX_EVENT_ID = 2**63 - 1  # SQLite's largest integer key
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # a proxy in front must pass events on as they come
]


class EventStream(Response):
    """The answer of one subscriber: headers, then whatever the hub sends, until the client
    leaves or the hub closes (a stream never ends otherwise)."""

    def __init__(self, hub: EventHub, after: int | None) -> None:
        super().__init__(media_type=EVENT_STREAM)
        self.hub = hub
        self.after = after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        pump = asyncio.ensure_future(self._pump(send))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, gone):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if pump.done() and not pump.cancelled() and pump.exception() is None:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif pump.done() and not pump.cancelled() and pump.exception() is not None:
            raise pump.exception()  # type: ignore[misc]

    async def _pump(self, send: Send) -> None:
        stream = self.hub.follow(self.after)
        try:
            async for chunk in stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            await stream.aclose()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _start(request: Request, after: str | None) -> int | None:
    """Where the stream starts: after ``Last-Event-ID`` (a reconnecting EventSource sends it,
    and keeps its URL's ``after``), else ``?after``, else from now (None)."""
    last = request.headers.get("last-event-id")
    if last:
        return parse_bounded(last, "Last-Event-ID", 0, MAX_EVENT_ID)
    if after is not None:
        return parse_bounded(after, "after", 0, MAX_EVENT_ID)
    return None


def add_event_routes(app: FastAPI, hub: EventHub) -> None:
    @app.get(
        "/network/events",
        tags=["events"],
        summary="Every change, as it becomes durable (text/event-stream)",
        response_class=Response,
        responses={200: {"content": {EVENT_STREAM: {"schema": {"type": "string"}}},
                         "description": "id, event and data lines per change; comments as heartbeats"}},
    )
    async def events(
        request: Request,
        after: Annotated[str | None, Query(description="the last event id seen")] = None,
    ) -> Response:
        return EventStream(hub, _start(request, after))
