"""Leases: claims that free themselves unless renewed (CONTRACT.md, "Holders").

A lease is one more holder of entries. It is kept as its wall-clock expiry in whole seconds since
the epoch, not as a timer: a daemon that was down when a lease ran out frees it at its next
start, and a renewal saved before a crash keeps its new expiry.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lightd.core.changes import PutLease
from lightd.errors import InvalidInput, quoted

__all__ = ["MAX_TTL", "Lease", "new_lease", "parse_ttl", "rfc3339"]

MAX_TTL = 86_400
ID_PREFIX = "lease_"


@dataclass
class Lease:
    id: str
    expires_at: int  # whole seconds since the epoch
    ttl: int
    created_at: int

    def due(self, now: float) -> bool:
        return self.expires_at <= now

    def renewed(self, now: float, ttl: int | None = None) -> Lease:
        """The lease moved to expire ``ttl`` (its own when None) seconds from ``now``."""
        ttl = self.ttl if ttl is None else ttl
        return Lease(self.id, _expiry(now, ttl), ttl, self.created_at)

    def change(self) -> PutLease:
        return PutLease(self.id, self.expires_at, self.ttl, self.created_at)

    def summary(self) -> dict[str, Any]:
        """What a claim's answer and the events say of it."""
        return {"id": self.id, "expires_at": rfc3339(self.expires_at), "ttl": self.ttl}

    def to_json(self) -> dict[str, Any]:
        return {**self.summary(), "created_at": rfc3339(self.created_at)}

    def sort_key(self) -> tuple[int, str]:
        return (self.expires_at, self.id)


def _expiry(now: float, ttl: int) -> int:
    # Rounded up to the second: the lease lasts at least ttl seconds, and expires_at is exact.
    return math.ceil(now) + ttl


def new_lease(now: float, ttl: int) -> Lease:
    return Lease(ID_PREFIX + secrets.token_hex(8), _expiry(now, ttl), ttl, math.floor(now))


def parse_ttl(value: Any, field: str = "ttl") -> int:
    """A JSON integer of seconds, 1..86400: not a bool, a float or a string."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TTL:
        raise InvalidInput(
            f"{field} must be an integer from 1 to {MAX_TTL} (seconds), got {quoted(value)}"
        )
    return value


def rfc3339(seconds: float, milliseconds: bool = False) -> str:
    """``2026-12-02T08:00:05Z`` (with ``.123`` before the Z when ``milliseconds``)."""
    moment = datetime.fromtimestamp(seconds, UTC)
    text = moment.isoformat(timespec="milliseconds" if milliseconds else "seconds")
    return text.replace("+00:00", "Z")
