"""Storage faults against a real `lightd serve`: a writer that stops answering, a full disk.

A stuck writer must cost a client no more than ``storage.write_timeout``: its changes fail with
503 "not confirmed", the writer is replaced, and ``/api/v1/status`` says storage is unhealthy
until a transaction succeeds again. A full disk must not stop the daemon from starting and
serving reads, nor stop deletions that free space; additions fail with 503 "disk full".
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lightd.adapters.sqlite_store import SqliteStore
from lightd.core.changes import DeletePort, PutPort
from lightd.errors import StorageError
from tests.conftest import HEADERS, write_test_config
from tests.e2e.daemon import ServedDaemon, running

pytestmark = pytest.mark.slow

WRITE_TIMEOUT = 1
STUCK_FOR = 20.0  # the writer would answer again after this long (the 20 s)


@pytest.fixture
def daemons() -> Iterator[list[tuple[ServedDaemon, httpx.Client]]]:
    """Daemons a test starts, with a client each; stopped however the test ends."""
    started: list[tuple[ServedDaemon, httpx.Client]] = []
    yield started
    for daemon, http in started:
        http.close()
        daemon.stop()  # SIGTERM, or SIGKILL when it does not exit


def serve(daemons: list, config: Path) -> tuple[ServedDaemon, httpx.Client]:
    daemon = ServedDaemon(config)
    http = httpx.Client(base_url=daemon.url, headers=HEADERS, timeout=60)
    daemons.append((daemon, http))
    daemon.start()
    return daemon, http


def in_use(http: httpx.Client) -> set[tuple[str, int, str]]:
    response = http.get("/network/ports")
    assert response.status_code == 200, response.text
    return {(p["ip"], p["port"], p["protocol"]) for p in response.json()["ports"] if p["in_use"]}


def keys(http: httpx.Client) -> set[tuple[str, int, str]]:
    response = http.get("/network/ports")
    assert response.status_code == 200, response.text
    return {(p["ip"], p["port"], p["protocol"]) for p in response.json()["ports"]}


def storage(http: httpx.Client) -> dict:
    response = http.get("/api/v1/status")
    assert response.status_code == 200
    return response.json()["storage"]


def claimed(response: httpx.Response) -> set[tuple[str, int, str]]:
    assert response.status_code == 200, response.text
    return {(p["ip"], p["port"], p["protocol"]) for p in response.json()["ports"]}


def wait_until(condition, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Resume:
    """SIGCONT ``pid`` after STUCK_FOR seconds if it is still the daemon's child (never another
    process that reused the pid), as the operator who stopped it would."""

    def __init__(self, daemon: ServedDaemon, pid: int) -> None:
        self.fired = threading.Event()
        self._timer = threading.Timer(STUCK_FOR, self._resume, args=(daemon, pid))
        self._timer.start()

    def _resume(self, daemon: ServedDaemon, pid: int) -> None:
        self.fired.set()
        with contextlib.suppress(OSError, AssertionError):
            if pid in daemon.children():
                os.kill(pid, signal.SIGCONT)

    def cancel(self) -> None:
        self._timer.cancel()


def test_a_stopped_writer_fails_its_change_with_503_in_time_and_is_replaced(tmp_path, daemons):
    config = write_test_config(tmp_path, storage={"write_timeout": WRITE_TIMEOUT})
    daemon, http = serve(daemons, config)
    kept = claimed(http.post("/network/ports/claim", json={"count": 1}))  # acknowledged
    [writer] = daemon.children()
    os.kill(writer, signal.SIGSTOP)  # the daemon's own child, started by this test's daemon
    resume = Resume(daemon, writer)
    try:
        response = http.post("/network/ports/claim", json={"count": 1})
        assert not resume.fired.is_set(), "the claim waited for the stopped writer"
        assert response.status_code == 503, response.text
        assert f"not confirmed within {WRITE_TIMEOUT} s" in response.json()["error"]
        health = storage(http)
        assert health["healthy"] is False and health["since"], health
        assert "writer" in health["reason"], health
        assert http.get("/api/v1/public/ping").status_code == 200
        # The stuck child is killed and reaped; memory is rebuilt from the file.
        assert wait_until(lambda: writer not in daemon.children() and not running(writer))
        assert in_use(http) == kept
        assert not resume.fired.is_set()
        again = claimed(http.post("/network/ports/claim", json={"count": 1}))
        [replacement] = daemon.children()
        assert replacement != writer
        assert storage(http)["healthy"] is True
    finally:
        resume.cancel()
    assert daemon.stop() in (0, -15)
    daemon.start()
    assert in_use(http) == kept | again  # nothing acknowledged is lost, nothing unconfirmed kept


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_a_writer_blocked_by_a_lock_fails_in_time_and_reads_never_report_unsaved_changes(
    tmp_path, daemons, writer
):
    # Another program holding the database's write lock: the writer waits (SQLite's busy
    # timeout, 5 s) and then fails. A thread cannot be killed; a process is killed and replaced.
    config = write_test_config(tmp_path, storage={"write_timeout": WRITE_TIMEOUT, "writer": writer})
    daemon, http = serve(daemons, config)
    database = tmp_path / "data" / "lightd.sqlite3"
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        response = http.post("/network/ports/claim", json={"count": 1})
        assert response.status_code == 503, response.text
        assert f"not confirmed within {WRITE_TIMEOUT} s" in response.json()["error"]
        assert storage(http)["healthy"] is False
        # A read answers, and never shows the claim that was not saved (or refuses, 503).
        read = http.get("/network/ports", params={"in_use": "true"})
        assert read.status_code in (200, 503), read.text
        if read.status_code == 200:
            assert read.json()["ports"] == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # Once the writer is free again (or replaced), changes work and storage is healthy.
    assert wait_until(
        lambda: http.post("/network/ports/claim", json={"count": 1}).status_code == 200, seconds=30
    )
    assert storage(http)["healthy"] is True
    # The claim that was not confirmed may have been saved (a thread cannot be stopped): memory
    # says what the file says.
    db = sqlite3.connect(database)
    try:
        saved = set(db.execute("SELECT ip, port, protocol FROM ports WHERE in_use = 1"))
    finally:
        db.close()
    assert in_use(http) == saved and len(saved) in (1, 2)


# -- a full disk -------------------------------------------------------------------------------


def mount_reason() -> str | None:
    if os.geteuid() != 0:
        return "not running as root: mounting a small tmpfs needs root"
    return None


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 8 MiB tmpfs mounted on a temporary folder (root only), always unmounted after."""
    reason = mount_reason()
    point = tmp_path / "disk"
    point.mkdir()
    if reason is None:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            reason = f"cannot mount a tmpfs: {done.stderr.strip()}"
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the full-disk tests cannot run: {reason}")
        pytest.skip(reason)
    try:
        yield point
    finally:
        done = subprocess.run(["umount", str(point)], capture_output=True, text=True, check=False)
        if done.returncode != 0:  # something still has a file open there: never leave the mount
            subprocess.run(["umount", "--lazy", str(point)], check=True)
            pytest.fail(f"the test left files open on its tmpfs: {done.stderr.strip()}")


def fill(folder: Path, leave: int = 0) -> None:
    """Take the disk's free space, but ``leave`` bytes, with filler files."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    index = len(list(folder.glob("filler-*")))
    fd = os.open(folder / f"filler-{index}", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if free > leave:
            os.posix_fallocate(fd, 0, free - leave)
        if leave == 0:
            for size in (65536, 4096, 512, 1):
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * size)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


def free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def test_a_full_disk_still_serves_reads_and_deletions_and_refuses_additions(tmp_path, small_disk, daemons):
    data = small_disk / "data"
    config = write_test_config(tmp_path, storage={"base_path": str(data)})
    daemon, http = serve(daemons, config)
    added = http.post("/network/ports/bulk", json={"ip": "0.0.0.0", "ports": "20000-20999"})
    assert added.status_code == 201, added.text
    # The database fills the disk: additions fail with 503 and change nothing.
    fill(small_disk, leave=2 << 20)
    refused = None
    for host in range(1, 50):  # loopback addresses are always local: room to fill any disk
        for start in range(1, 20000, 2000):
            ranged = {"ip": f"127.0.0.{host}", "protocol": "both", "ports": f"{start}-{start + 1999}"}
            response = http.post("/network/ports/bulk", json=ranged)
            if response.status_code != 201:
                refused = (f"127.0.0.{host}", start, response)
                break
        if refused is not None:
            break
    assert refused is not None, "the disk never filled"
    host, start, response = refused
    assert response.status_code == 503, response.text
    pool = keys(http)
    assert (host, start, "tcp") not in pool
    # Restart on a disk with no byte free: it starts and serves the pool.
    assert daemon.stop() in (0, -15)
    fill(small_disk)
    assert free_bytes(small_disk) == 0
    daemon.start()
    assert keys(http) == pool
    health = storage(http)
    assert health["healthy"] is False and health["disk_full"] is True, health
    # Additions still fail and change nothing...
    response = http.post("/network/ports", json={"ip": "0.0.0.0", "port": 19999})
    assert response.status_code == 503, response.text
    assert "disk full" in response.json()["error"]
    response = http.post("/network/ports/claim", json={"count": 1})
    assert response.status_code == 503, response.text
    assert keys(http) == pool and not in_use(http)
    # ...and deletions work.
    response = http.delete("/network/ports/0.0.0.0/20000")
    assert response.status_code == 200, response.text
    gone = [{"ip": "0.0.0.0", "port": port} for port in range(20001, 21000)]
    response = http.post("/network/ports/bulk-delete", json={"ports": gone})
    assert response.status_code == 200, response.text
    assert response.json()["deleted_count"] == 999
    left = pool - {("0.0.0.0", port, "tcp") for port in range(20000, 21000)}
    assert keys(http) == left
    assert daemon.stop() in (0, -15)
    daemon.start()
    assert keys(http) == left
    # Once space is freed, the reserve is made again and additions work.
    for filler in small_disk.glob("filler-*"):
        filler.unlink()
    response = http.post("/network/ports", json={"ip": "0.0.0.0", "port": 19999})
    assert response.status_code == 201, response.text
    assert (data / "lightd.reserve").exists()
    assert storage(http)["healthy"] is True


# -- the store itself on a full disk (the paths the daemon test may or may not take) --------------


def ports(count: int, in_use: bool = False) -> list[PutPort]:
    return [PutPort("0.0.0.0", port, "tcp", in_use, None, None) for port in range(1, count + 1)]


def test_a_database_closed_cleanly_opens_on_a_disk_with_no_byte_free(small_disk):
    # Its -shm file is gone and must be made before anything can be read: the reserve pays.
    path = small_disk / "data" / "lightd.sqlite3"
    store = SqliteStore(path)
    store.open()
    store.apply(ports(2000))
    store.close()
    fill(small_disk)
    store = SqliteStore(path)
    store.open()
    try:
        assert len(store.load_entries()) == 2000
        assert not (path.parent / "lightd.reserve").exists()
        with pytest.raises(StorageError, match="disk full"):
            store.apply([PutPort("0.0.0.0", 5000, "tcp", False, None, None)])
        with pytest.raises(StorageError, match="disk full"):
            store.apply([PutPort("0.0.0.0", 7, "tcp", True, None, None)])  # a claim adds a holder
        store.apply([DeletePort("0.0.0.0", port, "tcp") for port in range(1, 1001)])
        assert len(store.load_entries()) == 1000
    finally:
        store.close()


def test_a_deletion_that_finds_the_disk_full_uses_the_reserve_and_is_retried(small_disk):
    path = small_disk / "data" / "lightd.sqlite3"
    store = SqliteStore(path)
    store.open()
    try:
        store.apply(ports(3000))
        # Another connection keeps the -shm file, as a running daemon's reader does: opening
        # again must read only (a current schema is not written again).
        fill(small_disk)
        second = SqliteStore(path)
        second.open()
        second.close()
        with pytest.raises(StorageError, match="disk full"):
            store.apply([PutPort("0.0.0.0", 5000, "tcp", False, None, None)])
        assert (path.parent / "lightd.reserve").exists()  # an addition never takes it
        # Freeing every entry rewrites every page: the WAL must grow, on a disk with no room.
        store.apply([DeletePort("0.0.0.0", port, "tcp") for port in range(1, 3001)])
        assert store.load_entries() == []
        assert not (path.parent / "lightd.reserve").exists()  # it paid for the deletion
    finally:
        store.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT count(*) FROM ports").fetchone() == (0,)
    finally:
        db.close()
