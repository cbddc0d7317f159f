"""JSON responses serialised with orjson, skipping FastAPI's encoder on the hot paths."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
from starlette.responses import Response
from starlette.types import Send

__all__ = ["Encoded", "encode_in_pieces", "json_response", "send_json"]

T = TypeVar("T")


class Encoded:
    """A JSON body encoded already (see :func:`encode_in_pieces`): answered as it is."""

    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = body


async def encode_in_pieces(
    head: bytes, items: Sequence[T], convert: Callable[[T], Any], tail: bytes, piece: int
) -> Encoded:
    """``head``, the JSON list of ``convert(item)`` for every item, then ``tail``: the bytes
    orjson gives for the whole in one go, but made ``piece`` items at a time with a turn of the
    loop between two pieces, so a list of 100,000 items does not hold the loop for a tenth of a
    second. Each item is converted when its piece is made, so it is encoded as it is then."""
    parts: list[bytes | memoryview] = [head, b"["]
    for start in range(0, len(items), piece):
        if start:
            await asyncio.sleep(0)
            parts.append(b",")
        encoded = orjson.dumps([convert(item) for item in items[start:start + piece]], default=str)
        parts.append(memoryview(encoded)[1:-1])  # without its brackets: no copy
    parts += (b"]", tail)
    return Encoded(b"".join(parts))


def json_response(data: Any, status: int = 200) -> Response:
    """A JSON response of ``data``, or the bytes of an :class:`Encoded` (values orjson cannot
    encode, such as a Path in error details: str)."""
    body = data.body if type(data) is Encoded else orjson.dumps(data, default=str)
    return Response(body, status, media_type="application/json")


async def send_json(
    send: Send, status: int, data: Any, extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer straight from ASGI middleware, outside FastAPI; the body as ``json_response``'s."""
    body = data.body if type(data) is Encoded else orjson.dumps(data, default=str)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
