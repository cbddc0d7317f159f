"""Every error becomes ``{"error": "<one sentence>"}`` here, by class, never per route."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from lightd.api.responses import json_response
from lightd.errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    LightdError,
    NoAvailablePorts,
    NotFound,
    StorageError,
    Unavailable,
)

__all__ = ["error_response", "install_error_handlers", "lightd_error", "validation_message"]

log = logging.getLogger(__name__)

# Most specific first; the first class that matches decides the status.
STATUS_BY_ERROR: list[tuple[type[LightdError], int]] = [
    (InvalidInput, 400),
    (NotFound, 404),
    (AlreadyExists, 409),
    (Conflict, 409),
    (NoAvailablePorts, 409),  # the routes that answer 404 for it say so (see `random`)
    (StorageError, 503),
    (Unavailable, 503),
    (LightdError, 500),
]

HTTP_MESSAGES = {
    404: "Not found",
    405: "Method not allowed",
    413: "Request body is larger than 1 MiB",
}


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    body = {"error": message, **extra}
    return Response(orjson.dumps(body, default=str), status, headers, media_type="application/json")


def lightd_error(exc: LightdError, method: str, path: str) -> tuple[int, dict[str, Any]]:
    """The status and body answering ``exc`` (``{"error", **details}``); 5xx are logged."""
    status = status_of(exc)
    if status >= 500:
        log.error("%s %s failed: %s", method, path, exc.message)
    body: dict[str, Any] = {"error": exc.message}
    body.update((key, value) for key, value in exc.details.items() if key != "error")
    return status, body


def status_of(exc: LightdError) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(exc, kind):
            return status
    return 500  # pragma: no cover - LightdError is last in the table


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
        if message.startswith(leaf + " "):
            return field + message[len(leaf):]
        return f"{field}: {message}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{field} must be a JSON object"
    if kind in ("list_type",):
        return f"{field} must be a JSON array"
    return f"{field}: {message[0].lower() + message[1:]}"


def install_error_handlers(app: FastAPI) -> None:
    async def on_lightd_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LightdError)
        status, body = lightd_error(exc, request.method, request.url.path)
        return json_response(body, status)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(400, validation_message(list(exc.errors())))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = HTTP_MESSAGES.get(exc.status_code) or str(exc.detail)
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, message, headers=headers)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed unexpectedly", request.method, request.url.path)
        return error_response(500, "Internal error")

    app.add_exception_handler(LightdError, on_lightd_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
