"""Nothing acknowledged is lost: restarts, SIGKILL right after an answer, SIGKILL mid bulk."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time

import httpx
import pytest

from lightd.adapters.sqlite_store import SqliteStore
from lightd.core.changes import PutPort
from tests.conftest import HEADERS, write_test_config
from tests.e2e.daemon import ServedDaemon, running

pytestmark = pytest.mark.slow


def pool_of(daemon: ServedDaemon) -> list[tuple]:
    body = httpx.get(daemon.url + "/network/ports", headers=HEADERS, timeout=30).json()
    return [(p["ip"], p["port"], p["protocol"], p["in_use"]) for p in body["ports"]]


def test_restart_gives_back_exactly_the_pool(served):
    url, h = served.url, HEADERS
    httpx.post(url + "/network/ports", json={"ip": "::", "port": 19132, "protocol": "udp"}, headers=h)
    httpx.put(url + "/network/ports/0.0.0.0/25566/use", json={"in_use": True}, headers=h)
    httpx.delete(url + "/network/ports/0.0.0.0/25567", headers=h)
    before = pool_of(served)
    # uvicorn re-raises SIGTERM after a clean shutdown, as a well-behaved daemon should.
    assert served.stop() in (0, -15)
    assert "Application shutdown complete" in served.tail()
    served.start()
    assert pool_of(served) == before


def test_an_acknowledged_change_survives_sigkill(served):
    for port in range(30000, 30050):
        response = httpx.post(served.url + "/network/ports", json={"ip": "0.0.0.0", "port": port},
                              headers=HEADERS)
        assert response.status_code == 201
    response = httpx.put(served.url + "/network/ports/0.0.0.0/30049/use", json={"in_use": True},
                         headers=HEADERS)
    assert response.status_code == 200
    writers = served.children()
    assert writers, "the daemon writes through a child process"
    served.kill()
    # The writer leaves by itself once its socket to the dead daemon closes.
    deadline = time.monotonic() + 10
    while any(running(pid) for pid in writers) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(running(pid) for pid in writers)
    served.start()
    pool = pool_of(served)
    assert sum(1 for p in pool if 30000 <= p[1] < 30050) == 50
    assert ("0.0.0.0", 30049, "tcp", True) in pool


def post_ignoring_the_crash(url: str, ports: list[dict]) -> None:
    # The daemon is killed under the request: that is the point.
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(url + "/network/ports/bulk-delete", json={"ports": ports}, headers=HEADERS,
                   timeout=30)


def test_sigkill_during_bulk_delete_applies_all_or_none(tmp_path):
    config = write_test_config(tmp_path)
    bulk = 40_000
    store = SqliteStore(tmp_path / "data" / "lightd.sqlite3")
    store.open()
    store.apply([PutPort("0.0.0.0", p, "tcp", False, None, None) for p in range(1, bulk + 1)])
    store.close()
    daemon = ServedDaemon(config)
    outcomes = []
    try:
        # Kill at several moments after the request went out: before, during and after the commit.
        for delay in (0.05, 0.15, 0.3, 0.5, 0.8):
            daemon.start()
            before = len(pool_of(daemon))
            wanted = [{"ip": "0.0.0.0", "port": p} for p in range(1, bulk + 1)]
            thread = threading.Thread(target=post_ignoring_the_crash,
                                      args=(daemon.url, wanted), daemon=True)
            thread.start()
            time.sleep(delay)
            daemon.kill()
            thread.join(timeout=30)
            with sqlite3.connect(tmp_path / "data" / "lightd.sqlite3") as db:
                after = db.execute("SELECT COUNT(*) FROM ports").fetchone()[0]
            removed = before - after
            assert removed in (0, min(bulk, before)), f"killed after {delay}s: {removed} removed"
            outcomes.append(removed)
            if removed:
                break
    finally:
        daemon.kill()
    assert outcomes, "the bulk delete ran at least once"
