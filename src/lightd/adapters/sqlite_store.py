"""The pool in an embedded SQLite file (WAL, synchronous=FULL).

The store is deliberately synchronous and small: lightd writes through it from one writer (a
child process, ``lightd.adapters.sqlite_child``, or a thread: ``storage.writer``), and
the group commit that batches concurrent requests lives above it (``lightd.service.committer``),
so a PostgreSQL store only has to implement the same four methods.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path

from lightd.adapters.disk_reserve import DiskReserve
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
from lightd.core.entry import Entry
from lightd.core.leases import Lease
from lightd.errors import StorageError

__all__ = ["SqliteStore"]

# 1: ports and containers; 2: the lease holding a port, the leases, the event backlog.
SCHEMA_VERSION = 2
SQLITE_FULL = 13
SQLITE_IOERR_SHMSIZE = 10 | (19 << 8)
TABLES = ("ports", "containers", "leases", "events")
PAGE_SIZE = 1024
SCHEMA = """
CREATE TABLE IF NOT EXISTS ports (
    ip        TEXT    NOT NULL,
    port      INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    protocol  TEXT    NOT NULL CHECK (protocol IN ('tcp', 'udp')),
    in_use    INTEGER NOT NULL DEFAULT 0 CHECK (in_use IN (0, 1)),
    container TEXT,
    note      TEXT,
    lease     TEXT,
    PRIMARY KEY (ip, port, protocol)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS containers (
    internal_id TEXT PRIMARY KEY,
    body        TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    id         TEXT    PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    ttl        INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id   INTEGER PRIMARY KEY,
    type TEXT    NOT NULL,
    data TEXT    NOT NULL
);
"""
# A database of schema 1 gets the column its ports table lacks (the new tables come with SCHEMA).
MIGRATE_1 = "ALTER TABLE ports ADD COLUMN lease TEXT"

PUT_VALUES = "VALUES (?, ?, ?, ?, ?, ?, ?)"
PUT_SQL = (
    "INSERT OR REPLACE INTO ports (ip, port, protocol, in_use, container, note, lease) " + PUT_VALUES
)
DELETE_SQL = "DELETE FROM ports WHERE ip = ? AND port = ? AND protocol = ?"
EXISTS_SQL = "SELECT 1 FROM ports WHERE ip = ? AND port = ? AND protocol = ?"
SQL_BY_CHANGE: dict[type, str] = {
    PutPort: PUT_SQL,
    DeletePort: DELETE_SQL,
    PutContainer: "INSERT OR REPLACE INTO containers (internal_id, body) VALUES (?, ?)",
    DeleteContainer: "DELETE FROM containers WHERE internal_id = ?",
    PutLease: "INSERT OR REPLACE INTO leases (id, expires_at, ttl, created_at) VALUES (?, ?, ?, ?)",
    DeleteLease: "DELETE FROM leases WHERE id = ?",
    PutEvent: "INSERT OR REPLACE INTO events (id, type, data) VALUES (?, ?, ?)",
    TrimEvents: "DELETE FROM events WHERE id < ?",
}
# What a transaction on a full disk may carry besides what frees entries: the events that tell
# of it, and what only deletes.
_FREEING = (DeletePort, DeleteContainer, DeleteLease, PutEvent, TrimEvents)


def _no_space(exc: sqlite3.Error) -> bool:
    """SQLITE_FULL, or a -shm file that could not be given its room (also no space)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF == SQLITE_FULL or code == SQLITE_IOERR_SHMSIZE)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, sqlite3.Error) and _no_space(exc):
        return f"{exc} (the disk is full)"
    return str(exc)


def _full(detail: str | None) -> str:
    why = f" ({detail})" if detail else ""
    return (
        f"disk full: the change was not saved, nothing changed{why}. Reads and deletions still "
        "work; free space on that disk"
    )


ROWS_PER_STATEMENT = 500  # 7 parameters a row: well under SQLite's limit of 32,766


@functools.lru_cache(maxsize=64)
def _put_many_sql(rows: int) -> str:
    return PUT_SQL.replace(PUT_VALUES, "VALUES " + ", ".join(["(?,?,?,?,?,?,?)"] * rows))


def _put_ports(db: sqlite3.Connection, rows: list[PutPort]) -> None:
    """Many rows per statement: one step (one GIL release and re-take) instead of one per row,
    which matters when the loop thread is busy serving while this runs."""
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start:start + ROWS_PER_STATEMENT]
        db.execute(_put_many_sql(len(chunk)), [value for row in chunk for value in row])


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self.created = False
        self.reserve = DiskReserve(path.parent)
        # The event backlog is read on a connection of its own (from worker threads), so reads
        # never share the writer's.
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    def open(self) -> None:
        """Open (creating if needed) the database; ``created`` tells whether it is new.

        A database whose schema is current is only read, so lightd starts on a full disk. If even
        reading needs room (a WAL database's ``-shm`` file is made on first read), the disk
        reserve is given up for it.
        """
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.created = not self.path.exists()
            # Used from the committer's thread after being opened on the main one; never at once.
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open database {self.path}: {_reason(exc)}") from exc
        try:
            db.execute("PRAGMA busy_timeout=5000")
            try:
                self._prepare(db)
            except sqlite3.Error as exc:
                if not _no_space(exc) or not self.reserve.release():
                    raise
                self._prepare(db)
        except BaseException as exc:
            db.close()  # a daemon that cannot open its database keeps no file of it open
            if isinstance(exc, sqlite3.Error | OSError):
                raise StorageError(f"cannot open database {self.path}: {_reason(exc)}") from exc
            raise
        self._db = db

    def _prepare(self, db: sqlite3.Connection) -> None:
        """Make the schema current, writing only what is not so yet."""
        db.execute("PRAGMA synchronous=FULL")  # this connection's; it reads the file's header
        if self.created:
            # Rows are ~40 bytes and changes touch scattered rows: small pages mean less to
            # write (and fsync) per change. Only possible before the first table exists.
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode=WAL")  # stored in the file: once
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"database {self.path} was written by a newer lightd (schema {version})"
            )
        tables = db.execute(
            f"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
            f"({', '.join('?' * len(TABLES))})",
            TABLES,
        ).fetchone()[0]
        if version < SCHEMA_VERSION or tables < len(TABLES):
            columns = {row[1] for row in db.execute("PRAGMA table_info(ports)")}
            db.execute("BEGIN IMMEDIATE")
            try:
                if columns and "lease" not in columns:
                    db.execute(MIGRATE_1)
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError("the store is not open")
        return self._db

    def load_entries(self) -> list[Entry]:
        rows = self.db.execute(
            "SELECT ip, port, protocol, in_use, container, note, lease FROM ports"
        ).fetchall()
        return [Entry(ip, port, proto, bool(used), holder, note, lease) for ip, port, proto, used,
                holder, note, lease in rows]

    def load_leases(self) -> list[Lease]:
        rows = self.db.execute("SELECT id, expires_at, ttl, created_at FROM leases").fetchall()
        return [Lease(*row) for row in rows]

    def event_bounds(self) -> tuple[int, int]:
        """The ids of the oldest and the newest event kept (0, 0 when none is)."""
        low, high = self.db.execute("SELECT min(id), max(id) FROM events").fetchone()
        return (low or 0, high or 0)

    def read_events(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        """Up to ``limit`` events of ids above ``after``, in order: ``(id, type, data)``.

        Safe from any thread, beside the writer: on its own connection (WAL: readers never
        wait for the writer).
        """
        with self._reader_lock:
            try:
                if self._reader is None:
                    self._reader = sqlite3.connect(
                        f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                        check_same_thread=False,
                    )
                    self._reader.execute("PRAGMA busy_timeout=5000")
                rows = self._reader.execute(
                    "SELECT id, type, data FROM events WHERE id > ? ORDER BY id LIMIT ?",
                    (after, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot read the event backlog: {_reason(exc)}") from exc
        return [(int(i), str(t), str(d)) for i, t, d in rows]

    def load_containers(self) -> list[str]:
        """Every container, as the JSON text it was saved as."""
        return [body for (body,) in self.db.execute("SELECT body FROM containers")]

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply every change in one transaction: all of them are durable, or none.

        On a full disk (see DiskReserve.shortfall) only a transaction that frees entries is
        tried; it may use the disk reserve (removed, then the transaction retried once). Any
        other is refused "disk full", or fails so if the disk fills under it.
        """
        shortfall = self.reserve.shortfall(make=True)
        if shortfall is not None and not self._frees_only(changes):
            raise StorageError(_full(shortfall))
        try:
            self._transaction(changes)
        except sqlite3.Error as exc:
            if not _no_space(exc):
                raise StorageError(f"could not save the change: {exc}") from exc
            if not self._frees_only(changes) or not self.reserve.release():
                raise StorageError(_full(str(exc))) from exc
            try:
                self._transaction(changes)
            except sqlite3.Error as again:
                message = _full(str(again)) if _no_space(again) else (
                    f"could not save the change: {again}")
                raise StorageError(message) from again
        if shortfall is not None:
            self.reserve.shortfall(make=True)  # room a deletion gave back goes to the reserve first

    def _transaction(self, changes: Sequence[Change]) -> None:
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            for kind, run in groupby(changes, key=type):
                if kind is PutPort:
                    _put_ports(db, [change for change in run if isinstance(change, PutPort)])
                else:
                    db.executemany(SQL_BY_CHANGE[kind], run)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _frees_only(self, changes: Sequence[Change]) -> bool:
        """Whether ``changes`` only delete entries and containers or free existing entries."""
        for change in changes:
            if isinstance(change, _FREEING):
                continue
            if (isinstance(change, PutPort) and not change.in_use and change.container is None
                    and self.db.execute(EXISTS_SQL, change[:3]).fetchone() is not None):
                continue
            return False
        return True

    def close(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        if self._db is not None:
            self._db.close()
            self._db = None
