"""The bounded HTTP protocol (``lightd.api.server``) over real loopback sockets, for httptools and
for h11 alike: slow heads and bodies are cut, answers that take long are not, and connections
over the limit are refused at once.

uvicorn's own keep-alive timeout is set far above every wait here, so a connection closed within
a wait was closed by the bounds under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvicorn

from lightd.api.server import MAX_HEAD_BYTES, bind_listener, protocol_class

HEAD_TIMEOUT = 0.3
BODY_TIMEOUT = 0.4
SLOW = 1.0  # seconds /slow takes to answer: longer than both timeouts
WAIT = 10.0  # how long a test waits for something that must happen (not a timing assertion)
PING = b"GET /ping HTTP/1.1\r\nHost: lightd\r\n\r\n"


async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/slow":
        await asyncio.sleep(SLOW)
    answer = json.dumps({"path": scope["path"], "received": len(body)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(answer)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": answer})


class Served:
    """A running server's port; the connections opened to it are closed when it stops."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writers: list[asyncio.StreamWriter] = []

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        return reader, writer

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def serving(kind: str, max_connections: int = 64) -> AsyncIterator[Served]:
    sockets = bind_listener("127.0.0.1", 0)
    served = Served(sockets[0].getsockname()[1])
    config = uvicorn.Config(
        app,
        http=protocol_class(HEAD_TIMEOUT, BODY_TIMEOUT, max_connections, kind=kind),
        ws="none",
        lifespan="off",
        log_level="warning",
        timeout_keep_alive=120,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=sockets))
    try:
        async with asyncio.timeout(WAIT):
            while not server.started:
                await asyncio.sleep(0.01)
        yield served
    finally:
        await served.close()
        server.should_exit = True
        await task


@pytest.fixture(params=["httptools", "h11"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    async with asyncio.timeout(WAIT):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        lengths = [int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")]
        body = await reader.readexactly(lengths[0]) if lengths else await reader.read()
        return int(lines[0].split()[1]), body


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Whether the server closes the connection (after any bytes it still sends) within WAIT."""
    try:
        async with asyncio.timeout(WAIT):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def test_a_head_that_does_not_arrive_in_time_is_closed(kind):
    async with serving(kind) as served:
        reader, writer = await served.connect()
        writer.write(b"GET /ping HTTP/1.1\r\nHost: lig")
        assert await closed_by_server(reader)
        silent_reader, silent = await served.connect()
        assert await closed_by_server(silent_reader), "a client that sends nothing is closed too"


async def test_a_kept_alive_connection_owes_its_next_head_in_time_too(kind):
    async with serving(kind) as served:
        reader, writer = await served.connect()
        for _ in range(3):  # slower in total than the head timeout: each head has its own
            writer.write(PING)
            assert (await response(reader))[0] == 200
            await asyncio.sleep(HEAD_TIMEOUT / 2)
        writer.write(b"GET /ping HTTP/1.1\r\n")
        assert await closed_by_server(reader)


async def test_an_endless_chunked_body_is_closed(kind):
    async with serving(kind) as served:
        reader, writer = await served.connect()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: lightd\r\nTransfer-Encoding: chunked\r\n\r\n")

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                while not writer.is_closing():
                    writer.write(b"1\r\nx\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.05)

        sending = asyncio.create_task(trickle())
        try:
            assert await closed_by_server(reader), "a body still coming after the timeout is cut"
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending


async def test_answers_that_take_longer_than_the_timeouts_are_not_cut(kind):
    async with serving(kind) as served:
        reader, writer = await served.connect()
        writer.write(b"GET /slow HTTP/1.1\r\nHost: lightd\r\n\r\n")
        assert await response(reader) == (200, b'{"path": "/slow", "received": 0}')
        writer.write(b"POST /slow HTTP/1.1\r\nHost: lightd\r\nContent-Length: 5\r\n\r\nhello")
        assert await response(reader) == (200, b'{"path": "/slow", "received": 5}')
        # Pipelined: all three heads arrive at once, the answers take 3 s in all.
        writer.write(b"GET /slow HTTP/1.1\r\nHost: lightd\r\n\r\n" * 2 + PING)
        assert [(await response(reader))[0] for _ in range(3)] == [200, 200, 200]


async def test_a_body_the_app_has_not_read_yet_is_not_the_clients_delay(kind):
    async with serving(kind) as served:
        reader, writer = await served.connect()
        # The second request's body sits unread while the first one's slow answer is made.
        body = b"x" * 200_000
        writer.write(
            b"GET /slow HTTP/1.1\r\nHost: lightd\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: lightd\r\nContent-Length: 200000\r\n\r\n" + body
        )
        assert (await response(reader))[0] == 200
        assert await response(reader) == (200, b'{"path": "/echo", "received": 200000}')


async def test_connections_over_the_limit_are_answered_503_and_closed_at_once(kind):
    async with serving(kind, max_connections=2) as served:
        held = [await served.connect() for _ in range(2)]
        for reader, writer in held:  # both served: the limit counts connections, not requests
            writer.write(PING)
            assert (await response(reader))[0] == 200
        reader, writer = await served.connect()
        status, body = await response(reader)
        assert (status, json.loads(body)) == (503, {"error": "Too many connections; try again later"})
        assert await closed_by_server(reader)
        for held_reader, _ in held:  # idle: cut by the head timeout; room again
            assert await closed_by_server(held_reader)
        reader, writer = await served.connect()
        writer.write(PING)
        assert (await response(reader))[0] == 200


async def test_a_head_over_the_bound_is_refused_and_closed(kind):
    async with serving(kind) as served:
        reader, writer = await served.connect()
        writer.write(
            b"GET /ping HTTP/1.1\r\nHost: lightd\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES // 2) + b"\r\n\r\n"
        )
        assert (await response(reader))[0] == 200, "a head under the bound is served"
        writer.write(b"GET /ping HTTP/1.1\r\nX-Big: a")
        await writer.drain()
        await asyncio.sleep(0.1)  # a read of its own, so the bound counts what follows
        with contextlib.suppress(ConnectionError):
            writer.write(b"a" * (4 * MAX_HEAD_BYTES))
            await writer.drain()
        status, _ = await response(reader)
        assert status == (431 if kind == "httptools" else 400)
        assert await closed_by_server(reader)
