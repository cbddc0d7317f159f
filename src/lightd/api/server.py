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
  closed at once, so it holds its descriptor for no longer than that.

A connection past its deadline is aborted (no answer: its request is not complete). The
deadlines are kept as timestamps and checked by one timer per connection that re-arms itself,
so a request costs a few attribute stores instead of arming and cancelling timers.
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import logging
import resource
import socket
import time
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from uvicorn.protocols.http.flow_control import FlowControl

__all__ = ["RESERVED_FDS", "bind_listener", "protocol_class", "raise_open_files_limit"]

log = logging.getLogger("lightd.api.server")

# Descriptors kept out of the connection budget: the store and its writer, firewall and engine
# calls, the log, the event loop's own.
RESERVED_FDS = 128
# h11's default bound on a request's head, for httptools, which has none of its own.
MAX_HEAD_BYTES = 16 * 1024
REFUSED_BODY = b'{"error":"Too many connections; try again later"}'
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(REFUSED_BODY)).encode("ascii") + b"\r\n"
    b"connection: close\r\n\r\n" + REFUSED_BODY
)
TOO_LARGE_BODY = b'{"error":"Request head too large"}'
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(TOO_LARGE_BODY)).encode("ascii") + b"\r\n"
    b"connection: close\r\n\r\n" + TOO_LARGE_BODY
)
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
    max_connections: int = 512
    _last_warning: float = float("-inf")

    # What the mixin reads of uvicorn's protocol (set by its __init__ and connection_made).
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    connections: set[Any]
    cycle: Any
    flow: FlowControl

    _refused = False
    _phase = _NONE
    _deadline = 0.0
    _timer: asyncio.TimerHandle | None = None
    _timer_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.connections) >= self.max_connections:
            self._refuse(cast("asyncio.Transport", transport))
            return
        super().connection_made(transport)  # type: ignore[misc]
        self._enter(_HEAD, self.header_timeout)

    def _refuse(self, transport: asyncio.Transport) -> None:
        self._refused = True
        transport.write(REFUSED)
        transport.close()
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

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)  # type: ignore[misc]
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._follow()

    def _receiving_body(self) -> bool:
        raise NotImplementedError

    def _follow(self) -> None:
        """Move to the phase the connection is in now; a phase kept keeps its deadline."""
        if self.transport.is_closing():
            return
        if self._receiving_body():
            if self._phase != _BODY:
                self._enter(_BODY, self.body_timeout)
        elif self.cycle is None or self.cycle.response_complete:
            # Every request read so far is answered: the client owes the next head.
            if self._phase != _HEAD:
                self._enter(_HEAD, self.header_timeout)
        else:
            self._phase = _NONE  # a whole request is with the app: nothing is owed

    def _enter(self, phase: int, timeout: float) -> None:
        self._phase = phase
        self._deadline = self.loop.time() + timeout
        if self._timer is None or self._timer_at > self._deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._arm(self._deadline)

    def _arm(self, at: float) -> None:
        self._timer_at = at
        self._timer = self.loop.call_at(at, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self._phase == _NONE or self.transport.is_closing():
            return  # the next phase arms the timer again
        now = self.loop.time()
        if self._phase == _BODY and self.flow.read_paused:
            # lightd stopped reading (the app has not asked for more yet): not the client's time.
            self._deadline = now + self.body_timeout
        if self._deadline > now:
            self._arm(self._deadline)
            return
        log.debug(
            "closing a connection whose request %s did not arrive in time",
            "head" if self._phase == _HEAD else "body",
        )
        self.transport.abort()


def _httptools_class() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpTools(_Bounded, HttpToolsProtocol):
        _in_body = False
        _in_head = False
        _began_here = False
        _head_bytes = 0

        def _receiving_body(self) -> bool:
            return self._in_body

        def data_received(self, data: bytes) -> None:
            self._began_here = False
            super().data_received(data)
            # httptools buffers a head without bound. A chunk that ends inside a head is all
            # head; the chunk it began in is not counted (it may carry the end of the request
            # before), so a head is cut at most one read (256 KiB) past the bound.
            if self._in_head and not self._began_here and not self.transport.is_closing():
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._too_large()

        def _too_large(self) -> None:
            log.debug("closing a connection whose request head is over %d bytes", MAX_HEAD_BYTES)
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(TOO_LARGE)
                self.transport.close()
            else:  # an answer to an earlier request is still being written: no 431 into it
                self.transport.abort()

        def on_message_begin(self) -> None:
            self._in_head = self._began_here = True
            self._head_bytes = 0
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._in_body = True
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_body = False
            super().on_message_complete()

    return BoundedHttpTools


def _h11_class() -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11(_Bounded, H11Protocol):
        def _receiving_body(self) -> bool:
            return bool(self.conn.their_state is h11.SEND_BODY)

    return BoundedH11


def protocol_class(
    header_timeout: float, body_timeout: float, max_connections: int, kind: str | None = None
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol (h11's when httptools is missing, or ``kind="h11"``) with
    the bounds above; pass it as ``uvicorn.Config(http=...)``."""
    if kind is None:
        kind = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    base = _httptools_class() if kind == "httptools" else _h11_class()
    return type(
        base.__name__,
        (base,),
        {
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "max_connections": max_connections,
        },
    )
