"""The child process of :mod:`lightd.adapters.sqlite_writer`: applies the transactions it reads.

Kept apart, and free of asyncio, so the child starts in a few tens of milliseconds. The wire
format is defined here and used by both sides: frames of a 4-byte big-endian length and a
``marshal`` body; to the child, a list of ``(kind, *fields)`` changes forming one transaction;
to the parent, ``None`` once it is durable or the error text when nothing of it was applied. The
child's first frame says whether it could open the database.
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
from lightd.core.changes import Change, DeleteContainer, DeletePort, PutContainer, PutPort
from lightd.errors import StorageError

__all__ = ["LENGTH", "READ_SIZE", "encode", "frame", "serve"]

KINDS: tuple[type[Change], ...] = (PutPort, DeletePort, PutContainer, DeleteContainer)
_CODES = {kind: code for code, kind in enumerate(KINDS)}
LENGTH = struct.Struct(">I")
READ_SIZE = 1 << 16


def frame(value: Any) -> bytes:
    body = marshal.dumps(value)
    return LENGTH.pack(len(body)) + body


def encode(changes: Sequence[Change]) -> bytes:
    return frame([(_CODES[type(change)], *change) for change in changes])


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
    with open(fd, "rb", buffering=READ_SIZE, closefd=False) as stream:
        while True:
            head = _read_exactly(stream, LENGTH.size)
            if head is None:
                break
            body = _read_exactly(stream, LENGTH.unpack(head)[0])
            if body is None:
                break
            answer: str | None = None
            try:
                store.apply([KINDS[code](*fields) for code, *fields in marshal.loads(body)])
            except StorageError as exc:
                answer = exc.message
            except Exception as exc:  # noqa: BLE001 - the parent must hear of every failure
                answer = f"could not save the change: {type(exc).__name__}: {exc}"
            sock.sendall(frame(answer))
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), Path(sys.argv[2])))
