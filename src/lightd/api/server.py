"""The HTTP server around the app: a listening socket bound up front, and bounded connections.

uvicorn reads a request for as long as the client likes: a connection that never finishes its
head, or sends an endless chunked body, stays open for good, and enough of them use up the
daemon's file descriptors (accept fails, then the store, the firewall and the engine do too).
``protocol_class`` returns uvicorn's own HTTP protocol with three bounds added:

- a request's head must be complete within ``header_timeout`` seconds of the connect, or of the
  previous response on a kept-alive connection;
- its body within ``body_timeout`` seconds of the end of the head (time during which lightd
  itself is not reading, because the app has not asked for more yet, does not count);
- at most ``max_connections`` connections are served at once; one more is answered 503 and
  closed at once, so it holds its descriptor for no longer than that;
- what lightd writes must be taken: a connection whose writes stay paused (the client's window
  full: it stopped reading) for ``send_timeout`` seconds while an answer is being sent is
  aborted. Above all an event stream, which never ends by itself, but any answer alike.

A connection past its deadline is aborted (no answer: its request is not complete). One timer
per connection looks at uvicorn's state four times per timeout, so a timeout of T closes between
T and 1.25 T after the client fell behind. Hooks on every request's parser callbacks measured
about 15% more daemon CPU per ``ping``; this costs about 2%.

With ``api.tls`` lightd runs the TLS handshake itself (``loop.start_tls`` on the accepted
connection) instead of handing the context to uvicorn: asyncio's own TLS server calls the
protocol only once the handshake is done, so a client that connects and never finishes it would
be invisible to all three bounds (60 s of handshake timeout each, and no limit on how many).
Here the handshake is part of the head's time (it must be done, and the head read, within
``header_timeout`` of the connect) and a connection in its handshake counts against
``max_connections``; one over the limit is closed at once (no 503: nothing can be said to a
client before its handshake).
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import logging
import resource
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import uvicorn

if TYPE_CHECKING:
    from uvicorn.protocols.http.flow_control import FlowControl

__all__ = [
    "RESERVED_FDS",
    "StreamingServer",
    "bind_listener",
    "connection_budget",
    "protocol_class",
    "raise_open_files_limit",
]

log = logging.getLogger("lightd.api.server")

# Descriptors kept out of the connection budget: the store and its writer, firewall and engine
# calls, the log, the event loop's own.
RESERVED_FDS = 128
# h11's default bound on a request's head, for httptools, which has none of its own.
MAX_HEAD_BYTES = 16 * 1024


def _closing_answer(status: str, body: bytes) -> bytes:
    """A whole JSON answer, written by the protocol itself before the connection is closed."""
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode("ascii") + body


REFUSED = _closing_answer("503 Service Unavailable", b'{"error":"Too many connections; try again later"}')
TOO_LARGE = _closing_answer("431 Request Header Fields Too Large", b'{"error":"Request head too large"}')
WARN_EVERY = 60.0  # seconds between two warnings about refused connections

_NONE, _HEAD, _BODY = 0, 1, 2


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (systemd's 1024 default is easily spent
    on connections); return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:  # the kernel refuses more than fs.nr_open
            with open("/proc/sys/fs/nr_open") as nr_open:
                target = int(nr_open.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, exc)
    return soft


def connection_budget(wanted: int, open_files: int) -> int:
    """``api.max_connections``, lowered when the descriptor limit cannot carry it."""
    budget = max(1, min(wanted, open_files - RESERVED_FDS))
    if budget < wanted:
        log.warning(
            "api.max_connections lowered from %d to %d: the open files limit is %d",
            wanted,
            budget,
            open_files,
        )
    return budget


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address in use"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "this host has no such address"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    return (exc.strerror or str(exc)).lower()


def bind_listener(host: str, port: int, backlog: int = 2048) -> list[socket.socket]:
    """Bound, listening sockets for ``host:port`` (one per address it resolves to), as asyncio
    would make them; raise ``OSError`` with a one-line message when one cannot be had."""
    shown = _address(host, port)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError, OverflowError) as exc:
        raise OSError(f"cannot listen on {shown}: {exc}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys((i[0], i[1], i[2], i[3], i[4]) for i in infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart over TIME_WAIT
            if family == socket.AF_INET6:  # as asyncio does: "::" is IPv6 only, "0.0.0.0" v4
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
                sock.listen(backlog)  # reserves the port: another bind fails from now on
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {shown}: {_reason(exc)}") from None
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _Bounded:
    """The bounds, mixed in before uvicorn's protocol class (see ``protocol_class``)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    send_timeout: float = 10.0
    max_connections: int = 512
    _last_warning: float = float("-inf")
    _paused_since: float | None = None

    # What the mixin reads of uvicorn's protocol (set by its __init__ and connection_made).
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    connections: set[Any]
    cycle: Any  # the RequestResponseCycle of the last request whose head was read, or None
    flow: FlowControl

    _refused = False
    _timer: asyncio.TimerHandle | None = None
    _seen: tuple[Any, int] = (None, _NONE)
    _since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.connections) >= self.max_connections:
            self._refuse(cast("asyncio.Transport", transport))
            return
        super().connection_made(transport)  # type: ignore[misc]
        self._since = self.loop.time()
        self._seen = (None, _HEAD)
        self._timer = self.loop.call_at(self._since + self._period(), self._check)

    def _refuse(self, transport: asyncio.Transport) -> None:
        self._refused = True
        transport.write(REFUSED)
        transport.close()  # also stops reading: data_received is not called for it
        self._warn_refused()

    def _warn_refused(self) -> None:
        now = time.monotonic()
        if now - _Bounded._last_warning >= WARN_EVERY:
            _Bounded._last_warning = now
            log.warning("refusing connections: api.max_connections (%d) are open", self.max_connections)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._refused:
            super().connection_lost(exc)  # type: ignore[misc]

    def _period(self) -> float:
        # A deadline is seen at most this late, so a timeout T closes between T and 1.25 T.
        return min(self.header_timeout, self.body_timeout, self.send_timeout) / 4

    def _check(self) -> None:
        """Look at what the connection owes now; close it when it has owed that for too long.

        No hook runs per request: what is owed follows from uvicorn's own state. A new head read
        means a new ``cycle``; until its body is complete the client owes the body, then nothing
        until the answer is sent; after that (or before the first request) the next head.
        """
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            owed, timeout = _HEAD, self.header_timeout
        elif cycle.more_body:
            owed, timeout = _BODY, self.body_timeout
        else:
            owed, timeout = _NONE, 0.0
        if owed == _NONE and self.flow.write_paused:
            if self._paused_since is None:
                self._paused_since = now
            elif now - self._paused_since >= self.send_timeout:
                log.info("closing a connection that took nothing lightd wrote for %g s",
                         self.send_timeout)
                self.transport.abort()
                return
        else:
            self._paused_since = None
        if (cycle, owed) != self._seen:
            self._seen, self._since = (cycle, owed), now
        elif owed == _BODY and self.flow.read_paused:
            self._since = now  # lightd is not reading (the app has not asked yet): not the client's time
        elif owed != _NONE and now - self._since >= timeout:
            log.debug(
                "closing a connection whose request %s did not arrive in time",
                "head" if owed == _HEAD else "body",
            )
            self.transport.abort()
            return
        self._timer = self.loop.call_at(now + self._period(), self._check)


class _TlsFirst(_Bounded):
    """The TLS handshake, run by lightd before uvicorn's protocol sees the connection (mixed in
    before the bounded protocol class; see the module's docstring).

    A connection goes through three phases, and ``data_received`` serves each:
    ``_clear`` (bytes in clear, before ``start_tls`` took the transport: uvloop starts reading
    right after ``connection_made``, whatever it paused, so the start of the client's hello can
    land here; it is kept and handed to the TLS layer), ``_early`` (decrypted bytes that arrive
    once the handshake is done but before the coroutine waiting for it resumes: the TLS layer
    reads on at once), then uvicorn's protocol.
    """

    ssl_context: ssl.SSLContext
    handshaking: set[_TlsFirst]  # one set per protocol class: accepted, handshake not done

    _tcp: asyncio.Transport | None = None
    _clear: bytearray | None = None
    _early: bytearray | None = None
    _handshake: asyncio.Task[None] | None = None
    _lost = False
    _accepted = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp = cast("asyncio.Transport", transport)
        if len(self.connections) + len(self.handshaking) >= self.max_connections:
            self._refused = True
            tcp.close()
            self._warn_refused()
            return
        self.handshaking.add(self)
        self._accepted = self.loop.time()
        self._tcp, self._clear = tcp, bytearray()
        tcp.pause_reading()
        self._handshake = self.loop.create_task(self._start_tls(tcp))

    async def _start_tls(self, tcp: asyncio.Transport) -> None:
        starting = asyncio.ensure_future(
            self.loop.start_tls(
                tcp,
                cast("asyncio.BaseProtocol", self),
                self.ssl_context,
                server_side=True,
                ssl_handshake_timeout=self.header_timeout,
                ssl_shutdown_timeout=self.header_timeout,
            )
        )
        try:
            try:
                # start_tls's first step runs before this one resumes: it pauses the transport,
                # gives it to the TLS layer and schedules that layer's start.
                await asyncio.sleep(0)
                self._hand_over(tcp)
                encrypted = await starting
            finally:
                self.handshaking.discard(self)
                if not starting.done():
                    starting.cancel()
        except (OSError, ValueError, RuntimeError) as exc:  # ssl.SSLError and timeouts are OSError
            log.debug("closing a connection whose TLS handshake failed: %s", exc)
            tcp.abort()
            return
        early, self._early = self._early, None
        if self._lost or encrypted is None:
            return
        super().connection_made(encrypted)
        self._since = self._accepted  # the head is owed within header_timeout of the connect
        if early:
            self.data_received(bytes(early))

    def _hand_over(self, tcp: asyncio.Transport) -> None:
        clear, self._clear, self._early = self._clear, None, bytearray()
        layer: Any = tcp.get_protocol()
        if layer is self:
            raise RuntimeError("start_tls did not take the connection")
        if clear:  # after the layer's connection_made and before the reading it resumes
            self.loop.call_soon(_feed, tcp, layer, bytes(clear))

    def data_received(self, data: bytes) -> None:
        if self._clear is not None:
            self._clear += data
            if self._tcp is not None:
                self._tcp.pause_reading()
            return
        if self._early is not None:
            self._early += data
            return
        super().data_received(data)  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._clear is not None or self._early is not None:
            # uvicorn's protocol never started: there is nothing of it to end.
            self._lost = True
            if self._handshake is not None:
                self._handshake.cancel()
            return
        super().connection_lost(exc)


def _feed(tcp: asyncio.Transport, layer: Any, data: bytes) -> None:
    """Give ``data`` to the TLS layer as its transport would have (both asyncio's and uvloop's
    are buffered protocols)."""
    if tcp.is_closing():
        return
    if not hasattr(layer, "get_buffer"):
        layer.data_received(data)
        return
    view = memoryview(data)
    while view:
        buffer = memoryview(layer.get_buffer(len(view)))
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        layer.buffer_updated(size)
        view = view[size:]


def _httptools_class() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpTools(_Bounded, HttpToolsProtocol):
        _head_bytes = 0

        def data_received(self, data: bytes) -> None:
            # httptools buffers a head without bound (h11 has its own). Bytes read while a head
            # is owed and after which none is complete are all head.
            cycle = self.cycle
            super().data_received(data)
            if self.cycle is not cycle:
                self._head_bytes = 0
            elif (cycle is None or cycle.response_complete) and not self.transport.is_closing():
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._too_large()

        def _too_large(self) -> None:
            log.debug("closing a connection whose request head is over %d bytes", MAX_HEAD_BYTES)
            if self.cycle is None or not self.cycle.more_body:
                self.transport.write(TOO_LARGE)
                self.transport.close()
            else:  # still reading the body of a request answered early: no answer fits here
                self.transport.abort()

    return BoundedHttpTools


def _h11_class() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11(_Bounded, H11Protocol):
        pass

    return BoundedH11


def protocol_class(
    header_timeout: float,
    body_timeout: float,
    max_connections: int,
    kind: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    send_timeout: float = 10.0,
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol (h11's when httptools is missing, or ``kind="h11"``) with
    the bounds above, speaking TLS with ``ssl_context`` when one is given; pass it as
    ``uvicorn.Config(http=...)`` (and no ``ssl_*`` settings to uvicorn: the handshake is ours)."""
    if kind is None:
        kind = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    base = _httptools_class() if kind == "httptools" else _h11_class()
    bounds: dict[str, Any] = {
        "header_timeout": header_timeout,
        "body_timeout": body_timeout,
        "send_timeout": send_timeout,
        "max_connections": max_connections,
    }
    if ssl_context is None:
        return type(base.__name__, (base,), bounds)
    bounds.update(ssl_context=ssl_context, handshaking=set())
    return type("Tls" + base.__name__, (_TlsFirst, base), bounds)


class StreamingServer(uvicorn.Server):
    """uvicorn's server, ending the event streams first when it shuts down: it waits for every
    answer in progress to end before the app's own shutdown, and a stream never ends by itself."""

    def __init__(self, end_streams: Callable[[], None], config: uvicorn.Config) -> None:
        super().__init__(config)
        self.end_streams = end_streams

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.end_streams()
        await super().shutdown(sockets)
