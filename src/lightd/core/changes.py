"""Changes to durable state, as plain values a store can apply in one transaction."""

from __future__ import annotations

import json
from typing import NamedTuple

from lightd.core.containers import Container
from lightd.core.entry import Entry

__all__ = [
    "Change",
    "DeleteContainer",
    "DeletePort",
    "PutContainer",
    "PutPort",
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


Change = PutPort | DeletePort | PutContainer | DeleteContainer


def put_port(entry: Entry) -> PutPort:
    return PutPort(entry.ip, entry.port, entry.protocol, entry.in_use, entry.container, entry.note)


def put_container(container: Container) -> PutContainer:
    return PutContainer(container.internal_id, json.dumps(container.to_json(), sort_keys=True))
