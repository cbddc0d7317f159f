"""The child process of :mod:`lightd.adapters.sqlite_writer`: applies the transactions it reads.

Kept apart, and free of asyncio, so the child starts in a few tens of milliseconds. The wire
format is defined here and used by both sides: frames of a 4-byte big-endian length and a
``marshal`` body; to the child, a list of ``(kind, *fields)`` changes; to the parent, ``None``
once a transaction is durable or the error text when nothing of it was applied. The child's
first frame says whether it could open the database.

A transaction is one frame, or for a big one several (the parent encodes a part at a time, so its
event loop is never held for long): the top bit of the length (``MORE``) says that more changes
of the same transaction follow. The child keeps the parts and applies nothing until the last one
has arrived; a socket that ends in between (the parent died) leaves the transaction unapplied.
"""

from __future__ import annotations

import marshal
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from lightd.adapters.sqlite_store import SqliteStore
from lightd.core.changes import (
    Change,
    DeleteContainer,
    DeleteLease,
    DeletePort,
    PutContainer,
    PutEvent,
    PutLease,
    PutPort,
    TrimEvents,
)
from lightd.errors import StorageError

__all__ = ["LENGTH", "MORE", "READ_SIZE", "encode", "frame", "serve"]

KINDS: tuple[type[Change], ...] = (
    PutPort, DeletePort, PutContainer, DeleteContainer, PutLease, DeleteLease, PutEvent, TrimEvents
)
_CODES = {kind: code for code, kind in enumerate(KINDS)}
LENGTH = struct.Struct(">I")
READ_SIZE = 1 << 16
# Set in a frame's length: the frame is a part of a transaction, and more parts follow.
MORE = 1 << 31


def frame(value: Any) -> bytes:
    body = marshal.dumps(value)
    return LENGTH.pack(len(body)) + body


def encode(changes: Sequence[Change], more: bool = False) -> bytes:
    """A frame of ``changes``: a whole transaction, or with ``more`` a part that others follow."""
    body = marshal.dumps([(_CODES[type(change)], *change) for change in changes])
    return LENGTH.pack((len(body) | MORE) if more else len(body)) + body


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def serve(fd: int, path: Path) -> int:
    """Apply every transaction read from socket ``fd`` to the database at ``path``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    store = SqliteStore(path)
    try:
        store.open()
    except StorageError as exc:
        sock.sendall(frame(exc.message))
        return 1
    sock.sendall(frame(None))
    parts: list[bytes] = []  # the frames of the transaction being received, before its last
    with open(fd, "rb", buffering=READ_SIZE, closefd=False) as stream:
        while True:
            head = _read_exactly(stream, LENGTH.size)
            if head is None:
                break
            (size,) = LENGTH.unpack(head)
            body = _read_exactly(stream, size & ~MORE)
            if body is None:
                break  # the parent is gone: a transaction received in part is never applied
            if size & MORE:
                parts.append(body)
                continue
            received: Sequence[bytes] = (body,)
            if parts:
                parts.append(body)
                received, parts = parts, []
            answer: str | None = None
            try:
                store.apply([
                    KINDS[code](*fields)
                    for part in received
                    for code, *fields in marshal.loads(part)
                ])
            except StorageError as exc:
                answer = exc.message
            except Exception as exc:  # noqa: BLE001 - the parent must hear of every failure
                answer = f"could not save the change: {type(exc).__name__}: {exc}"
            sock.sendall(frame(answer))
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), Path(sys.argv[2])))
