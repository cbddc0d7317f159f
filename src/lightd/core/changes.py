"""Changes to durable state, as plain values a store can apply in one transaction."""

from __future__ import annotations

import json
from typing import NamedTuple

from lightd.core.containers import Container
from lightd.core.entry import Entry

__all__ = [
    "Change",
    "DeleteContainer",
    "DeleteLease",
    "DeletePort",
    "PutContainer",
    "PutEvent",
    "PutLease",
    "PutPort",
    "TrimEvents",
    "put_container",
    "put_port",
]


class PutPort(NamedTuple):
    """Insert or replace one pool entry."""

    ip: str
    port: int
    protocol: str
    in_use: bool
    container: str | None
    note: str | None
    lease: str | None = None


class DeletePort(NamedTuple):
    ip: str
    port: int
    protocol: str


class PutContainer(NamedTuple):
    """Insert or replace one container; ``body`` is its JSON text."""

    internal_id: str
    body: str


class DeleteContainer(NamedTuple):
    internal_id: str


class PutLease(NamedTuple):
    """Insert or replace one lease; times are whole seconds since the epoch (wall clock)."""

    id: str
    expires_at: int
    ttl: int
    created_at: int


class DeleteLease(NamedTuple):
    id: str


class PutEvent(NamedTuple):
    """One event of the stream, saved with the change it tells of; ``data`` is its JSON text."""

    id: int
    type: str
    data: str


class TrimEvents(NamedTuple):
    """Forget the events before ``below``: the backlog keeps the newest ones only."""

    below: int


Change = (
    PutPort | DeletePort | PutContainer | DeleteContainer | PutLease | DeleteLease | PutEvent
    | TrimEvents
)


def put_port(entry: Entry) -> PutPort:
    return PutPort(
        entry.ip, entry.port, entry.protocol, entry.in_use, entry.container, entry.note, entry.lease
    )


def put_container(container: Container) -> PutContainer:
    return PutContainer(container.internal_id, json.dumps(container.to_json(), sort_keys=True))
