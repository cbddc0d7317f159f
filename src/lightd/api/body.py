"""Request bodies, read once and checked the same way on every route.

A body is JSON whatever its ``Content-Type`` says, or with none at all (what ``curl -d`` users
expect). It must be UTF-8 and every string in it valid Unicode: JSON's ``"\\ud800"`` (a lone UTF-16
surrogate) decodes to a Python string that cannot be encoded again, so accepted it would reach the
store and fail there after the change was made.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import orjson
from starlette.types import Message, Receive

from lightd.errors import QUOTE_LIMIT, BodyTooLarge, InvalidInput, quoted

__all__ = ["check_json", "read_body", "replay"]


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None when the client went away; BodyTooLarge past ``limit`` bytes."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the client's own messages."""
    sent = False

    async def receive_again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive_again


class _LongNumber:
    """Stands for an integer too long for Python to read; reported with the field it is in."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _read_int(text: str) -> int | _LongNumber:
    limit = sys.get_int_max_str_digits()
    return _LongNumber(len(text)) if limit and len(text.lstrip("-")) > limit else int(text)


def _refuse_constant(name: str) -> Any:
    raise InvalidInput(f"Request body is not valid JSON: {name} is not a JSON value")


def check_json(body: bytes) -> None:
    """Refuse a body that is not strict JSON of valid Unicode, naming the field at fault."""
    try:
        orjson.loads(body)  # strict and fast: what nearly every body passes
        return
    except (orjson.JSONDecodeError, RecursionError):
        pass
    # orjson refused: find out why, in words. Python's own parser accepts lone surrogates, so it
    # can say where one is.
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"Request body is not valid UTF-8 (at byte {exc.start})") from None
    try:
        value = json.loads(text, parse_int=_read_int, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"Request body is not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise InvalidInput("Request body is nested too deeply") from None
    problem = _first_problem(value)
    if problem is not None:
        raise InvalidInput(problem)
    # Otherwise only a number orjson cannot hold (such as 1e400): the route's own checks say
    # which field it is in and what the field takes.


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _field(path: str) -> str:
    if len(path) > QUOTE_LIMIT:
        return path[:QUOTE_LIMIT] + "..."
    return path or "Request body"


def _first_problem(value: Any) -> str | None:
    """The first string that is not valid Unicode, or number too long, with its field's path."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not _valid_unicode(item):
                return f"{_field(path)} is not valid Unicode: it holds a lone UTF-16 surrogate"
        elif isinstance(item, _LongNumber):
            return f"{_field(path)} is a number of {item.digits} digits, too long for any field"
        elif isinstance(item, dict):
            children: list[tuple[str, Any]] = []
            for key, child in item.items():
                if not _valid_unicode(key):
                    return (
                        f"{_field(path)} has a key that is not valid Unicode: "
                        f"{quoted(key)} holds a lone UTF-16 surrogate"
                    )
                children.append((f"{path}.{key}" if path else key, child))
            stack.extend(reversed(children))  # depth first, in the body's own order
        elif isinstance(item, list):
            stack.extend(reversed([(f"{path}[{i}]", child) for i, child in enumerate(item)]))
    return None
