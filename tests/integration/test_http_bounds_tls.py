"""The bounded protocol speaking TLS (``protocol_class(..., ssl_context=...)``) on both event loops
lightd runs on (asyncio's and uvloop's) and both HTTP parsers, over real loopback sockets.

uvloop starts reading a connection right after ``connection_made`` (a pause there is ignored),
so the first bytes of a ClientHello can reach the protocol before the TLS layer has the
connection; on asyncio, decrypted bytes can arrive before uvicorn's protocol has started. Many
fresh connections in a row hit both; each must be answered.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvicorn

from lightd.api.server import bind_listener, protocol_class
from lightd.tls import server_context

HEAD_TIMEOUT = 1.0
WAIT = 20.0  # how long a test waits for what must happen (not a timing assertion)
CONNECTIONS = 60
PING = b"GET /ping HTTP/1.1\r\nHost: lightd\r\n\r\n"


async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] != "http":
        return
    body = scope["scheme"].encode()  # what uvicorn saw: https when the TLS transport is its
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Tls:
    def __init__(self, folder: Path) -> None:
        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1")
        self.cert, self.key = folder / "cert.pem", folder / "key.pem"
        issued.cert_chain_pems[0].write_to_path(str(self.cert))
        issued.private_key_pem.write_to_path(str(self.key))
        self.key.chmod(0o600)
        self.client = ssl.create_default_context()
        ca.configure_trust(self.client)

    def connect(self, port: int) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        return self.client.wrap_socket(raw, server_hostname="127.0.0.1")


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return str(request.param)


@pytest.fixture(params=["httptools", "h11"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return Tls(tmp_path)


@pytest.fixture
def served(tls: Tls, loop_kind: str, kind: str) -> Iterator[tuple[int, uvicorn.Server]]:
    """The server in a thread of its own, on its own event loop of ``loop_kind``."""
    sockets = bind_listener("127.0.0.1", 0)
    port = sockets[0].getsockname()[1]
    http = protocol_class(
        HEAD_TIMEOUT, HEAD_TIMEOUT, 8, kind=kind, ssl_context=server_context(tls.cert, tls.key)
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            loop=loop_kind,
            http=http,
            ws="none",
            lifespan="off",
            log_level="warning",
            timeout_keep_alive=120,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets})
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield port, server
    finally:
        server.should_exit = True
        thread.join(WAIT)
        assert not thread.is_alive()


def answer(sock: ssl.SSLSocket) -> bytes:
    received = b""
    while not received.endswith(b"https"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    return received


def closed(sock: socket.socket) -> bool:
    sock.settimeout(WAIT)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


def test_every_fresh_tls_connection_is_answered(served, tls):
    port, _ = served
    for _ in range(CONNECTIONS):
        with tls.connect(port) as sock:
            sock.sendall(PING)
            reply = answer(sock)
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"https"), reply


def test_a_kept_alive_tls_connection_serves_request_after_request(served, tls):
    port, _ = served
    with tls.connect(port) as sock:
        for _ in range(20):
            sock.sendall(PING)
            assert answer(sock).endswith(b"https")


def test_handshakes_that_never_finish_are_closed_and_do_not_hold_the_server(served, tls):
    port, _ = served
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        silent[0].sendall(b"\x16\x03\x01")  # the start of a record, and no more
        assert all(closed(sock) for sock in silent)
    finally:
        for sock in silent:
            sock.close()
    with tls.connect(port) as sock:
        sock.sendall(PING)
        assert answer(sock).endswith(b"https")


def test_the_server_stops_with_a_connection_in_its_handshake(served):
    port, server = served
    pending = socket.create_connection(("127.0.0.1", port))
    try:
        time.sleep(0.1)  # accepted: its handshake is under way when the server stops
        server.should_exit = True
        assert closed(pending)
    finally:
        pending.close()


def test_plain_http_is_not_answered_in_clear(served):
    port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(PING)
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
    assert not received.startswith(b"HTTP/")
