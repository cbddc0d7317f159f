"""Pure ASGI middleware for the checks every request passes: body size, token, vendor header.

Written against raw ASGI rather than as FastAPI dependencies so that they cost next to nothing on
the hot paths (``random`` must run at nearly the rate of ``ping``).
"""

from __future__ import annotations

import hmac

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lightd.api.responses import send_json

__all__ = [
    "AUTH_ERROR",
    "MAX_BODY",
    "PUBLIC_PATHS",
    "VENDOR",
    "VENDOR_ERROR",
    "GuardMiddleware",
]

VENDOR = "application/vnd.pkglatv1+json"
AUTH_ERROR = "Invalid or missing Bearer token. Format: Authorization: Bearer lightd_<token>"
VENDOR_ERROR = "Invalid vendor. Expected: Application/vnd.pkglatv1+json"
BODY_ERROR = "Request body is larger than 1 MiB"
MAX_BODY = 1024 * 1024
_VENDOR_BYTES = VENDOR.encode()
PUBLIC_PATHS = frozenset({"/api/v1/public/ping", "/openapi.json", "/docs", "/docs/oauth2-redirect"})


class GuardMiddleware:
    """Checks, in order: body size, then the bearer token, then the vendor Accept header."""

    def __init__(self, app: ASGIApp, token: str, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization = b""
        accept = b""
        length = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"accept":
                accept = value
            elif name == b"content-length":
                length = value
        if length and (not length.isdigit() or int(length) > self.max_body):
            await send_json(send, 413, {"error": BODY_ERROR}, [(b"connection", b"close")])
            return
        if scope["path"] not in PUBLIC_PATHS:
            # compare_digest takes as long whatever the token's first wrong byte is.
            if not hmac.compare_digest(authorization.strip(), self.expected):
                await send_json(send, 401, {"error": AUTH_ERROR}, [(b"www-authenticate", b"Bearer")])
                return
            if _VENDOR_BYTES not in accept.lower():
                await send_json(send, 406, {"error": VENDOR_ERROR})
                return
        if length or scope["method"] in ("GET", "HEAD", "DELETE"):
            # A declared length was checked above, and the server never reads past it.
            await self.app(scope, receive, send)
            return
        await self._limited(scope, receive, send)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a body once it passes the limit, also when it comes chunked without a length."""
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    # Raised inside the app, so the one error map turns it into the 413 body.
                    raise HTTPException(413, BODY_ERROR)
            return message

        await self.app(scope, counting_receive, send)
