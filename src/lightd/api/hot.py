"""The hottest routes, as plain functions: ping, random, claim.

FastAPI's routes for these paths call them (and document them in OpenAPI); :class:`FastPath`
calls the same functions straight from ASGI, skipping FastAPI's per-request routing and
dependency machinery, which costs more than the pool itself. One behaviour, two entrances.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from time import perf_counter
from typing import Any
from urllib.parse import parse_qsl

import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lightd.api.errors import send_error, validation_message
from lightd.api.responses import Encoded, encode_in_pieces, send_json
from lightd.api.schemas import Claim, entry_out
from lightd.core.entry import parse_ip, parse_protocol
from lightd.errors import InvalidInput, NoAvailablePorts, NotFound
from lightd.metrics import UNMATCHED, Histogram, Metrics, RouteStats
from lightd.service.leases import LeaseService
from lightd.service.pool_service import PoolService

__all__ = ["FastPath", "claim_ports", "ping", "random_port"]

Json = dict[str, Any]

# Claims answering more entries than this encode their answer a piece of this many entries at a
# time, with a turn of the loop between pieces: a piece takes the loop a few ms (entry_out and
# orjson, 1-2 µs an entry), where 80,000 entries in one go held it for a tenth of a second.
ANSWER_PIECE = 2048


def ping() -> Json:
    return {"status": "ok"}


async def random_port(service: PoolService, query: Mapping[str, str]) -> Json:
    ip, protocol = query.get("ip"), query.get("protocol")
    try:
        entry = await service.random(
            None if ip is None else parse_ip(ip),
            None if protocol is None else parse_protocol(protocol),
        )
    except NoAvailablePorts as exc:
        raise NotFound(exc.message) from None  # CONTRACT.md: 404 for random only
    return entry_out(entry)


async def claim_ports(service: PoolService, leases: LeaseService, body: Claim) -> Json | Encoded:
    """The claim's answer, once it is durable: a big one encoded in pieces (the same bytes).
    With a ``ttl``, a lease holds the entries, and the answer says which.

    The claim lets the pool go once it is durable, so between two pieces another request may
    change an entry it was handed (an operator freeing one by hand): the entry shows as it is
    when its piece is made, as it would in an answer made at that moment.
    """
    lease: Json | None = None
    if body.ttl is None:
        entries = await service.claim(body.count, body.protocols, body.ip, body.contiguous,
                                      body.note)
    else:
        held, entries = await leases.claim(body.count, body.protocols, body.ip, body.contiguous,
                                           body.note, body.ttl)
        lease = held.summary()
    tail = b"}" if lease is None else b',"lease":' + orjson.dumps(lease) + b"}"
    if len(entries) <= ANSWER_PIECE:
        answer: Json = {"ports": [entry_out(e) for e in entries]}
        if lease is not None:
            answer["lease"] = lease
        return answer
    return await encode_in_pieces(b'{"ports":', entries, entry_out, tail, ANSWER_PIECE)


def parse_claim(raw: bytes) -> Claim:
    try:
        return Claim.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise InvalidInput(validation_message(list(exc.errors()))) from None


Handler = Callable[[Scope, Receive], Awaitable[tuple[int, Json | Encoded]]]


class FastPath:
    """ASGI middleware answering the hot routes itself; everything else goes to the app.

    It sits inside the guard middleware, so the token, vendor and body checks still apply, and
    its errors are answered by the same error map as FastAPI's routes (``errors.answer``).

    It also counts every request that passed the guard for ``lightd_http_requests_total`` (the
    guard counts its own refusals): the hot routes with their stats bound here once, so a
    request costs two clock reads and two increments; the others through a ``send`` that notes
    the status, labelled with the template of the route FastAPI matched (``scope["route"]``),
    never the raw path. ``hot=False`` sends the hot routes to FastAPI too (tests compare).
    """

    def __init__(
        self,
        app: ASGIApp,
        service: PoolService,
        leases: LeaseService,
        metrics: Metrics | None = None,
        hot: bool = True,
    ) -> None:
        self.app = app
        self.service = service
        self.leases = leases
        self.metrics = metrics if metrics is not None and metrics.enabled else None
        handlers: dict[tuple[str, str], Handler] = {
            ("GET", "/api/v1/public/ping"): self._ping,
            ("GET", "/network/ports/random"): self._random,
            ("POST", "/network/ports/claim"): self._claim,
        }
        metrics = self.metrics
        # Per hot route: its handler, its stats, and the histogram of its 200s, bound once.
        self.routes: dict[tuple[str, str], tuple[Handler, RouteStats | None, Histogram | None]] = {}
        for key, handler in handlers.items() if hot else ():
            stats = None if metrics is None else metrics.route(*key)
            self.routes[key] = (handler, stats, None if stats is None else stats.status(200))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get((scope.get("method", ""), scope.get("path", "")))
        if route is None or scope["type"] != "http":
            if self.metrics is None or scope["type"] != "http":
                await self.app(scope, receive, send)
            else:
                await self._counted(self.metrics, scope, receive, send)
            return
        handler, stats, ok = route
        start = perf_counter()
        try:
            status, body = await handler(scope, receive)
        except Exception as exc:
            status = await send_error(send, exc, scope["method"], scope["path"])
            if stats is not None:
                stats.done(status, perf_counter() - start)
            return
        await send_json(send, status, body)
        if stats is not None and ok is not None:
            (ok if status == 200 else stats.status(status)).observe(perf_counter() - start)

    async def _counted(self, metrics: Metrics, scope: Scope, receive: Receive, send: Send) -> None:
        start = perf_counter()
        status = 0

        async def counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            # Counted once an answer began (a 500 too); a client that left before is not.
            if status:
                template = getattr(scope.get("route"), "path", None) or UNMATCHED
                metrics.route(scope["method"], template).done(status, perf_counter() - start)

    async def _ping(self, scope: Scope, receive: Receive) -> tuple[int, Json]:
        return 200, ping()

    async def _random(self, scope: Scope, receive: Receive) -> tuple[int, Json]:
        # Parsed as Starlette's QueryParams (the route's request.query_params) does: latin-1,
        # blank values kept, the last of a repeated name wins; no query costs nothing.
        raw = scope.get("query_string", b"")
        query = dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)) if raw else {}
        return 200, await random_port(self.service, query)

    async def _claim(self, scope: Scope, receive: Receive) -> tuple[int, Json | Encoded]:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        return 200, await claim_ports(self.service, self.leases, parse_claim(b"".join(chunks)))
