"""The one exception tree of lightd.

Every error a client can see is a subclass of :class:`LightdError`; the API maps each class to a
status code in one table (``lightd.api.errors``). Messages are whole sentences meant for humans.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyExists",
    "Ambiguous",
    "Conflict",
    "InvalidInput",
    "LightdError",
    "NoAvailablePorts",
    "NotFound",
    "PortNotFound",
    "StorageError",
    "Unavailable",
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
