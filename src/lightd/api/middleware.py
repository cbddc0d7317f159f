"""Pure ASGI middleware for the checks every request passes: body size, token, vendor, JSON body.

Written against raw ASGI rather than as FastAPI dependencies so that they cost next to nothing on
the hot paths (``random`` must run at nearly the rate of ``ping``). A refusal is an exception of
``lightd.errors`` answered through the one error map (``lightd.api.errors.answer``).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from time import perf_counter

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from lightd.api.body import check_json, read_body, replay
from lightd.api.errors import send_error
from lightd.api.headers import accepts, bearer_credentials
from lightd.errors import BodyTooLarge, LightdError, NotAcceptable, Unauthorized
from lightd.metrics import UNMATCHED, Metrics

__all__ = [
    "AUTH_ERROR",
    "BODY_ERROR",
    "MAX_BODY",
    "PUBLIC_PATHS",
    "VENDOR",
    "VENDOR_ERROR",
    "EVENTS_PATH",
    "METRICS_PATH",
    "GuardMiddleware",
    "route_template",
]

VENDOR = "application/vnd.pkglatv1+json"
AUTH_ERROR = Unauthorized().message
VENDOR_ERROR = NotAcceptable().message
BODY_ERROR = BodyTooLarge().message
MAX_BODY = 1024 * 1024
_VENDOR_BYTES = VENDOR.encode()
PUBLIC_PATHS = frozenset({"/api/v1/public/ping", "/openapi.json", "/docs", "/docs/oauth2-redirect"})
# Prometheus sends an Accept of its own (text/plain, OpenMetrics): this one GET needs the token only.
METRICS_PATH = "/metrics"
# The event stream may be asked for as what it is, as an EventSource does (it sends no vendor).
EVENTS_PATH = "/network/events"
_EVENT_STREAM = b"text/event-stream"
# Methods whose body a route reads; any other body is left unread (and so ignored).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_JSON = (b"content-type", b"application/json")


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The template of the route ``scope`` names (``/network/ports/{ip}/{port}``), for labels:
    never the raw path, so that no client can make a series per address."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return str(getattr(route, "path", UNMATCHED))
    return UNMATCHED


class GuardMiddleware:
    """Checks, in order: declared body size, bearer token, vendor ``Accept``, then the body.

    The body is read here, whole, for every route that takes one: over 1 MiB is 413 however it
    comes (declared or chunked), and it must be strict JSON of valid Unicode whatever its
    ``Content-Type`` (see ``lightd.api.body``). The app then reads it as JSON.
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        max_body: int = MAX_BODY,
        metrics: Metrics | None = None,
        routes: Sequence[BaseRoute] = (),
    ) -> None:
        self.app = app
        self.token = token.encode()
        self.max_body = max_body
        # Refusals are counted here (what passes is counted by the fast path), labelled with
        # the template of the route ``routes`` (the app's, read when needed) matches.
        self.metrics = metrics if metrics is not None and metrics.enabled else None
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        try:
            checked = await self._check(scope, receive)
        except LightdError as exc:
            status = await send_error(send, exc, scope["method"], scope["path"])
            if self.metrics is not None:
                template = route_template(self.routes, scope)
                self.metrics.route(scope["method"], template).done(status, perf_counter() - start)
            return
        if checked is not None:
            await self.app(*checked, send)

    @staticmethod
    def _other_accepted(scope: Scope, accept: bytes) -> bool:
        """The two GETs that may go without the vendor type: a scrape, and the event stream
        asked for as text/event-stream."""
        if scope["method"] != "GET":
            return False
        if scope["path"] == METRICS_PATH:
            return True
        return scope["path"] == EVENTS_PATH and accepts(accept, _EVENT_STREAM)

    async def _check(self, scope: Scope, receive: Receive) -> tuple[Scope, Receive] | None:
        """The scope and receive the app gets, or None when the client left; raises a refusal."""
        authorization = b""
        accept: list[bytes] = []
        length = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"accept":
                accept.append(value)  # several Accept fields make one list (RFC 9110 5.3)
            elif name == b"content-length":
                length = value
        # A length of more digits than any allowed one is refused before int() reads it.
        if length and (not length.isdigit() or len(length) > 12 or int(length) > self.max_body):
            raise BodyTooLarge()
        if scope["path"] in PUBLIC_PATHS:
            return scope, receive
        # compare_digest takes as long whatever the token's first wrong byte is.
        credentials = bearer_credentials(authorization)
        if not hmac.compare_digest(credentials or b"", self.token) or credentials is None:
            raise Unauthorized()
        joined = b",".join(accept)
        if not accepts(joined, _VENDOR_BYTES) and not self._other_accepted(scope, joined):
            raise NotAcceptable()
        if scope["method"] not in _BODY_METHODS:
            return scope, receive
        body = await read_body(receive, self.max_body)
        if body is None:
            return None
        if body:
            check_json(body)
            # Read as JSON by every route, whatever the client declared.
            headers = [(n, v) for n, v in scope["headers"] if n != b"content-type"]
            headers.append(_JSON)
            scope = {**scope, "headers": headers}
        return scope, replay(body, receive)
