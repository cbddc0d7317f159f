"""Every error becomes ``{"error": "<one sentence>"}`` here, by class, never per route.

Every entrance ends in :func:`answer`: FastAPI's exception handlers, the guard middleware and the
fast path. It walks ``type(exc).__mro__`` as Starlette's own handler lookup does, so an exception
answers the same whichever entrance it came through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send

from lightd.api.responses import send_json
from lightd.errors import (
    AlreadyExists,
    Ambiguous,
    BodyTooLarge,
    Conflict,
    InvalidInput,
    LightdError,
    NoAvailablePorts,
    NotAcceptable,
    NotFound,
    PortNotFound,
    StorageError,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "HEADERS_BY_ERROR",
    "STATUS_BY_ERROR",
    "Answer",
    "answer",
    "install_error_handlers",
    "send_error",
    "status_of",
    "validation_message",
]

log = logging.getLogger(__name__)

# The status of each error class; a subclass takes the status of its nearest listed base.
# Every class of lightd.errors is listed (a test checks), so none falls to LightdError's 500.
STATUS_BY_ERROR: dict[type[BaseException], int] = {
    InvalidInput: 400,
    Unauthorized: 401,
    NotFound: 404,
    PortNotFound: 404,
    NotAcceptable: 406,
    AlreadyExists: 409,
    Conflict: 409,
    Ambiguous: 409,
    NoAvailablePorts: 409,  # the routes that answer 404 for it say so (see `random`)
    BodyTooLarge: 413,
    StorageError: 503,
    Unavailable: 503,
    LightdError: 500,
    RequestValidationError: 400,  # FastAPI's: a body, path or query its schema refused
    Exception: 500,
}

HEADERS_BY_ERROR: dict[type[BaseException], dict[str, str]] = {
    Unauthorized: {"WWW-Authenticate": "Bearer"},
    # The rest of the body was never read, so this connection cannot carry another request.
    BodyTooLarge: {"Connection": "close"},
}

HTTP_MESSAGES = {
    404: "Not found",
    405: "Method not allowed",
    413: "Request body is larger than 1 MiB",
}


class Answer(NamedTuple):
    status: int
    body: dict[str, Any]
    headers: dict[str, str]

    def encoded(self) -> bytes:
        try:
            return orjson.dumps(self.body, default=str)
        except TypeError:
            # A message that cannot be UTF-8 (a lone surrogate from some library): keep it
            # readable, drop the details, rather than fail while answering a failure.
            text = str(self.body.get("error", "")).encode("utf-8", "backslashreplace")
            return orjson.dumps({"error": text.decode("utf-8")})


def status_of(kind: type[BaseException]) -> int:
    """The status answering an exception of class ``kind``."""
    for base in kind.__mro__:
        status = STATUS_BY_ERROR.get(base)
        if status is not None:
            return status
    return 500  # a BaseException that is not an Exception


def _headers_of(kind: type[BaseException]) -> dict[str, str]:
    for base in kind.__mro__:
        headers = HEADERS_BY_ERROR.get(base)
        if headers is not None:
            return headers
    return {}


def _of_lightd(exc: LightdError) -> tuple[str, dict[str, Any]]:
    extra = {key: value for key, value in exc.details.items() if key != "error"}
    return exc.message, extra


def _of_validation(exc: RequestValidationError) -> tuple[str, dict[str, Any]]:
    return validation_message(list(exc.errors())), {}


def _of_unexpected(exc: BaseException) -> tuple[str, dict[str, Any]]:
    return "Internal error", {}


# How each kind of exception says what went wrong; looked up along the MRO like the status.
_MESSAGES: dict[type[BaseException], Callable[[Any], tuple[str, dict[str, Any]]]] = {
    LightdError: _of_lightd,
    RequestValidationError: _of_validation,
    Exception: _of_unexpected,
}


def answer(exc: BaseException, method: str, path: str) -> Answer:
    """The status, ``{"error", **details}`` body and headers answering ``exc``; 5xx are logged."""
    kind = type(exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, HTTPException):  # Starlette's own: 404 and 405 of the router, ...
        status = exc.status_code
        message = HTTP_MESSAGES.get(status) or str(exc.detail)
        headers = dict(exc.headers or {})
    else:
        status = status_of(kind)
        describe = next((_MESSAGES[b] for b in kind.__mro__ if b in _MESSAGES), _of_unexpected)
        message, extra = describe(exc)
        headers = _headers_of(kind)
    if status >= 500:
        if isinstance(exc, LightdError):
            log.error("%s %s failed: %s", method, path, exc.message)
        else:
            log.error("%s %s failed unexpectedly", method, path, exc_info=exc)
    return Answer(status, {"error": message, **extra}, headers)


async def send_error(send: Send, exc: BaseException, method: str, path: str) -> int:
    """Answer ``exc`` straight from ASGI (middleware, the fast path); return its status."""
    reply = answer(exc, method, path)
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
               for name, value in reply.headers.items()]
    await send_json(send, reply.status, orjson.Fragment(reply.encoded()), headers)
    return reply.status


def _loc_text(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def validation_message(errors: list[Any]) -> str:
    """One sentence for the first problem pydantic found, naming the field."""
    if not errors:
        return "Request is invalid"
    first = errors[0]
    kind = first.get("type", "")
    loc = tuple(first.get("loc", ()))
    where = loc[0] if loc else "body"
    path = loc[1:] if where in ("body", "query", "path") else loc
    field = _loc_text(path)
    message = str(first.get("msg", "is invalid"))
    if kind == "json_invalid":
        return f"Request body is not valid JSON: {first.get('ctx', {}).get('error', message)}"
    if kind == "missing" and not path:
        return "Request body is required and must be a JSON object"
    if not path:
        return "Request body must be a JSON object"
    if kind == "missing":
        return f"{field} is required"
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
        leaf = str(path[-1])
        # A core parser names the field itself ("port must ...", "ports[2] must ...").
        if message.startswith(leaf) and message[len(leaf):len(leaf) + 1] in (" ", "[", "."):
            return field + message[len(leaf):]
        return f"{field}: {message}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{field} must be a JSON object"
    if kind in ("list_type",):
        return f"{field} must be a JSON array"
    return f"{field}: {message[0].lower() + message[1:]}"


def install_error_handlers(app: FastAPI) -> None:
    """Every exception FastAPI's routes raise goes to :func:`answer`."""

    async def on_error(request: Request, exc: Exception) -> Response:
        reply = answer(exc, request.method, request.url.path)
        return Response(reply.encoded(), reply.status, reply.headers, media_type="application/json")

    # Starlette keeps Exception's handler apart (ServerErrorMiddleware), so each is named.
    for kind in (LightdError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(kind, on_error)
