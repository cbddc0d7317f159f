"""The SQLite store's schema 2 on real files: a schema-1 database is upgraded in place, leases
and events are saved with the changes they go with, and the backlog is read beside the writer."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from lightd.adapters.sqlite_store import SCHEMA_VERSION, SqliteStore
from lightd.adapters.sqlite_writer import SqliteWriter
from lightd.core.changes import DeleteLease, DeletePort, PutEvent, PutLease, PutPort, TrimEvents
from lightd.core.leases import Lease
from lightd.errors import StorageError

# The schema lightd wrote before leases and events (user_version 1).
SCHEMA_1 = """
CREATE TABLE ports (
    ip TEXT NOT NULL, port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    protocol TEXT NOT NULL CHECK (protocol IN ('tcp', 'udp')),
    in_use INTEGER NOT NULL DEFAULT 0 CHECK (in_use IN (0, 1)), container TEXT, note TEXT,
    PRIMARY KEY (ip, port, protocol)
) WITHOUT ROWID;
CREATE TABLE containers (internal_id TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO ports VALUES ('0.0.0.0', 25565, 'tcp', 1, 'mc-1', 'lobby');
INSERT INTO ports VALUES ('0.0.0.0', 25566, 'tcp', 0, NULL, NULL);
INSERT INTO containers VALUES ('mc-1', '{}');
PRAGMA user_version = 1;
"""


def test_a_schema_1_database_is_upgraded_in_place_and_keeps_every_row(tmp_path):
    path = tmp_path / "lightd.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_1)
    store = SqliteStore(path)
    store.open()
    try:
        entries = {e.key: (e.in_use, e.container, e.note, e.lease) for e in store.load_entries()}
        assert entries == {
            ("0.0.0.0", 25565, "tcp"): (True, "mc-1", "lobby", None),
            ("0.0.0.0", 25566, "tcp"): (False, None, None, None),
        }
        assert store.load_containers() == ["{}"] and store.load_leases() == []
        assert store.event_bounds() == (0, 0)
        store.apply([PutPort("0.0.0.0", 25566, "tcp", True, None, None, "lease_a"),
                     PutLease("lease_a", 100, 60, 40), PutEvent(1, "ports.claimed", "{}")])
    finally:
        store.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    again = SqliteStore(path)
    again.open()  # a current schema is only read
    try:
        assert again.load_leases() == [Lease("lease_a", 100, 60, 40)]
        leased = [e for e in again.load_entries() if e.lease == "lease_a"]
        assert [e.port for e in leased] == [25566]
    finally:
        again.close()


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "lightd.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 3")
    with pytest.raises(StorageError, match="newer lightd"):
        SqliteStore(path).open()


async def test_the_writer_process_saves_leases_and_events_and_the_backlog_reads_beside_it(tmp_path):
    path = tmp_path / "lightd.sqlite3"
    store = SqliteStore(path)
    store.open()
    writer = SqliteWriter(path)
    await writer.start()
    try:
        await writer.write([PutPort("0.0.0.0", p, "tcp", False, None, None) for p in range(1, 11)])
        for event_id in range(1, 201):
            changes = [PutPort("0.0.0.0", 1 + event_id % 10, "tcp", True, None, None, "lease_b"),
                       PutLease("lease_b", event_id, 5, 0),
                       PutEvent(event_id, "lease.renewed", f"{{\"n\":{event_id}}}")]
            if event_id % 50 == 0:
                changes.append(TrimEvents(event_id - 99))
            await writer.write(changes)
        assert store.event_bounds() == (101, 200)
        page = store.read_events(150, 20)
        assert [row[0] for row in page] == list(range(151, 171))
        assert page[0] == (151, "lease.renewed", '{"n":151}')
        assert store.read_events(200, 10) == []
        await writer.write([DeleteLease("lease_b"), DeletePort("0.0.0.0", 3, "tcp")])
        assert store.load_leases() == []
    finally:
        await writer.close()
        store.close()


def test_on_a_full_disk_a_release_with_its_event_counts_as_freeing(tmp_path):
    """The disk-full rule lets through what frees entries; the event that tells of it rides along."""
    store = SqliteStore(tmp_path / "lightd.sqlite3")
    store.open()
    try:
        store.apply([PutPort("0.0.0.0", 7, "tcp", True, None, None, "lease_c"), PutLease("lease_c", 9, 9, 0)])
        assert store._frees_only([PutPort("0.0.0.0", 7, "tcp", False, None, None), DeleteLease("lease_c"),
                                  PutEvent(5, "lease.released", "{}"), TrimEvents(1)])
        assert not store._frees_only([PutLease("lease_d", 9, 9, 0), PutEvent(6, "ports.claimed", "{}")])
    finally:
        store.close()
