"""JSON responses serialised with orjson, skipping FastAPI's encoder on the hot paths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Send

__all__ = ["json_response", "send_json"]


def json_response(data: Any, status: int = 200) -> Response:
    """A JSON response (values orjson cannot encode, such as a Path in error details: str)."""
    return Response(orjson.dumps(data, default=str), status, media_type="application/json")


async def send_json(
    send: Send, status: int, data: Any, extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer straight from ASGI middleware, outside FastAPI; the body as ``json_response``'s."""
    body = orjson.dumps(data, default=str)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
