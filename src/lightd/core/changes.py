"""Changes to durable state, as plain values a store can apply in one transaction."""

from __future__ import annotations

from typing import NamedTuple

from lightd.core.entry import Entry

__all__ = ["Change", "DeletePort", "PutPort", "put_port"]


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


Change = PutPort | DeletePort


def put_port(entry: Entry) -> PutPort:
    return PutPort(entry.ip, entry.port, entry.protocol, entry.in_use, entry.container, entry.note)
