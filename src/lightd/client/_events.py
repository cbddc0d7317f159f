"""Reading lightd's event stream (``GET /network/events``, ``text/event-stream``).

Two layers, both incremental (a chunk may end anywhere, even inside a UTF-8 character or
between the CR and the LF of a line end):

- :class:`StreamParser` reads the wire format as the WHATWG HTML standard says an
  ``EventSource`` does ("Interpreting an event stream"): lines end with CRLF, LF or CR; a line
  starting with ``:`` is a comment; ``field: value`` loses one space after the colon; ``data``
  lines are joined with ``\\n``; a blank line dispatches; an event without ``id`` keeps the last
  id; a block without ``data`` dispatches nothing; unknown fields are ignored.
- :class:`EventParser` turns those messages into lightd's :class:`Event`: an integer id, the
  type, and the data as a JSON object. What is not that is not lightd's stream (ValueError).
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from typing import Any

__all__ = ["Event", "EventParser", "Message", "StreamParser"]


@dataclass(frozen=True)
class Message:
    """One dispatched message of an event stream, as the standard defines it."""

    id: str  # the last event id in force when it was dispatched ("" when none was ever set)
    type: str  # "message" when the block named no event
    data: str


@dataclass(frozen=True)
class Event:
    """One event of lightd's stream: ``id`` increases, ``type`` is ``port.added``... or ``reset``."""

    id: int
    type: str
    data: dict[str, Any]


class StreamParser:
    """Feed it text as it arrives; it returns the messages each piece completes."""

    def __init__(self, last_id: str = "") -> None:
        self.last_id = last_id
        self.retry: int | None = None  # the last valid ``retry:`` in milliseconds
        self._line = ""  # the text of the line not yet ended
        self._after_cr = False  # the last piece ended with CR: an LF first in the next is its pair
        self._data: list[str] = []
        self._type = ""
        self._started = False  # a BOM is dropped only at the very start of the stream

    def feed(self, text: str) -> list[Message]:
        if not text:
            return []
        if not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = False
        messages: list[Message] = []
        start = 0
        while True:
            end = _line_end(text, start)
            if end < 0:
                self._line += text[start:]
                return messages
            line, self._line = self._line + text[start:end], ""
            if text[end] == "\r":
                if end + 1 == len(text):
                    self._after_cr = True  # whether an LF follows is for the next piece to say
                elif text[end + 1] == "\n":
                    end += 1
            start = end + 1
            message = self._process(line)
            if message is not None:
                messages.append(message)

    def _process(self, line: str) -> Message | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (lightd's ": connected", ": heartbeat")
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._type = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\0" not in value:
                self.last_id = value
        elif field == "retry" and value and all("0" <= c <= "9" for c in value):
            self.retry = int(value)
        return None

    def _dispatch(self) -> Message | None:
        data, kind = self._data, self._type
        self._data, self._type = [], ""
        if not data:
            return None
        return Message(self.last_id, kind or "message", "\n".join(data))


def _line_end(text: str, start: int) -> int:
    """The index of the first CR or LF in ``text`` from ``start``, or -1."""
    lf = text.find("\n", start)
    cr = text.find("\r", start, lf if lf >= 0 else len(text))
    return cr if cr >= 0 else lf


class EventParser:
    """Feed it the response's bytes as they arrive; it returns lightd's events they complete."""

    def __init__(self, last_id: int | None = None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stream = StreamParser("" if last_id is None else str(last_id))

    def feed(self, chunk: bytes) -> list[Event]:
        return [to_event(message) for message in self._stream.feed(self._decoder.decode(chunk))]


def to_event(message: Message) -> Event:
    """lightd's reading of a message: raises ValueError for what lightd does not send."""
    if not (message.id.isascii() and message.id.isdigit()):
        raise ValueError(f"an event whose id is not a number: {message.id[:40]!r}")
    try:
        data = json.loads(message.data)
    except ValueError:
        raise ValueError(
            f"a {message.type[:40]!r} event whose data is not JSON: {message.data[:80]!r}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"a {message.type[:40]!r} event whose data is not a JSON object: {message.data[:80]!r}"
        )
    return Event(int(message.id), message.type, data)
