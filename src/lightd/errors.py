"""The one exception tree of lightd.

Every error a client can see is a subclass of :class:`LightdError`; the API maps each class to a
status code in one table (``lightd.api.errors``). Messages are whole sentences meant for humans.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

__all__ = [
    "QUOTE_LIMIT",
    "AlreadyExists",
    "Ambiguous",
    "BodyTooLarge",
    "Conflict",
    "InvalidInput",
    "LightdError",
    "NoAvailablePorts",
    "NotAcceptable",
    "NotFound",
    "PortNotFound",
    "StorageError",
    "Unauthorized",
    "Unavailable",
    "quoted",
]


class LightdError(Exception):
    """Base of every error lightd reports to a client."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(LightdError):
    """The request is malformed: wrong type, out of range, bad ip or protocol."""


class NotFound(LightdError):
    """Something the request names does not exist."""


class PortNotFound(NotFound):
    def __init__(self, **details: Any) -> None:
        super().__init__("Port not found in pool", **details)


class AlreadyExists(LightdError):
    def __init__(self, message: str = "Port already exists in pool", **details: Any) -> None:
        super().__init__(message, **details)


class Conflict(LightdError):
    """The change would break a binding or hand one port to two holders."""


class Ambiguous(Conflict):
    """An ip:port exists for both tcp and udp and the request did not say which."""


class NoAvailablePorts(LightdError):
    def __init__(self, **details: Any) -> None:
        super().__init__("No available ports in pool", **details)


class StorageError(LightdError):
    """The change could not be made durable; nothing was acknowledged."""


class Unavailable(LightdError):
    """A part lightd depends on (firewall, container engine) cannot do what was asked."""


class Unauthorized(LightdError):
    """The bearer token is missing or wrong."""

    def __init__(self) -> None:
        super().__init__(
            "Invalid or missing Bearer token. Format: Authorization: Bearer lightd_<token>"
        )


class NotAcceptable(LightdError):
    """The Accept header does not list lightd's vendor media type."""

    def __init__(self) -> None:
        super().__init__("Invalid vendor. Expected: Application/vnd.pkglatv1+json")


class BodyTooLarge(LightdError):
    def __init__(self) -> None:
        super().__init__("Request body is larger than 1 MiB")


QUOTE_LIMIT = 100
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = QUOTE_LIMIT
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 2, 6, 6, 4


def quoted(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters.

    Input is echoed so that a client sees what was refused, but never whole: a 100 kB ip must not
    come back as a 100 kB error, and an integer of thousands of digits cannot even be written out
    (Python refuses past 4300 digits).
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        digits = math.floor((value.bit_length() - 1) * math.log10(2)) + 1
        return f"an integer of {digits} digits or more"
    if isinstance(value, str):
        text = repr(value[: limit + 1])  # escapes such as \x00 make it longer than the input
        if len(value) <= limit and len(text) <= limit + 2:
            return text
        return f"{text[:limit]}... ({len(value)} characters)"
    try:
        text = _REPR.repr(value)
    except ValueError:  # an integer too long to write out, nested in a list or dict
        return "a value too large to show"
    return text if len(text) <= limit else text[:limit] + "..."
