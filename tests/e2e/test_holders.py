"""One holder per entry, through a real ``lightd serve`` on a real SQLite file (runtime none).

Finding 3 of issue 10: on d0608b0 ``PUT .../use {"in_use": true}`` on a container's port answered
``changed: true`` and cleared its container, after which the port could be freed by hand, given to
a second container, and freed again by deleting the first one.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.conftest import HEADERS, write_test_config
from tests.e2e.daemon import ServedDaemon

pytestmark = pytest.mark.slow

# The seed's own ports; host_check off, so nothing here depends on what the host has bound.
PORTS = "25565-25569"


def _config(tmp_path: Path) -> Path:
    return write_test_config(
        tmp_path, pool={"initial_ports": [{"ip": "0.0.0.0", "ports": PORTS, "protocol": "tcp"},
                                          {"ip": "0.0.0.0", "ports": 19132, "protocol": "udp"}],
                        "host_check": False})


@pytest.fixture
def lightd(tmp_path: Path):
    daemon = ServedDaemon(_config(tmp_path))
    daemon.start()
    yield daemon
    daemon.stop()


def api(daemon: ServedDaemon) -> httpx.Client:
    return httpx.Client(base_url=daemon.url, headers=HEADERS, timeout=10)


def entry(http: httpx.Client, port: int) -> dict[str, object]:
    response = http.get(f"/network/ports/0.0.0.0/{port}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_use_true_on_a_containers_port_keeps_its_holder(lightd: ServedDaemon) -> None:
    with api(lightd) as http:
        created = http.post("/containers", json={
            "internal_id": "mc-3", "image": "busybox",
            "ports": [{"ip": "0.0.0.0", "port": 25565}, {"ip": "0.0.0.0", "port": 19132, "protocol": "udp"}]})
        assert created.status_code == 201, created.text
        bedrock = http.put("/network/ports/0.0.0.0/19132/use", json={"in_use": True})
        assert bedrock.status_code == 200 and bedrock.json()["changed"] is False
        freed_udp = http.put("/network/ports/0.0.0.0/19132/use", json={"in_use": False})
        assert freed_udp.status_code == 409 and "container mc-3" in freed_udp.json()["error"]

        marked = http.put("/network/ports/0.0.0.0/25565/use", json={"in_use": True})
        assert marked.status_code == 200, marked.text
        assert marked.json()["changed"] is False and marked.json()["in_use"] is True
        assert entry(http, 25565)["container"] == "mc-3"

        freed = http.put("/network/ports/0.0.0.0/25565/use", json={"in_use": False})
        assert freed.status_code == 409
        assert "container mc-3" in freed.json()["error"]

        second = http.post("/containers", json={
            "internal_id": "mc-4", "image": "busybox", "ports": [{"ip": "0.0.0.0", "port": 25565}]})
        assert second.status_code == 409
        assert "already in use by container mc-3" in second.json()["error"]

        deleted = http.delete("/network/ports/0.0.0.0/25565")
        assert deleted.status_code == 409 and "container mc-3" in deleted.json()["error"]
        bulk = http.post("/network/ports/bulk-delete",
                         json={"ports": [{"ip": "0.0.0.0", "port": 25565}]})
        assert bulk.status_code == 200 and bulk.json()["deleted_count"] == 0
        assert [s["port"] for s in bulk.json()["skipped"]] == [25565]
        assert entry(http, 25565)["container"] == "mc-3"

    lightd.stop()  # nothing above may have changed the file either
    lightd.start()
    with api(lightd) as http:
        assert entry(http, 25565)["container"] == "mc-3"
        assert http.get("/network/ports/0.0.0.0/19132").json()["container"] == "mc-3"
        assert http.delete("/containers/mc-3").status_code == 200
        assert entry(http, 25565)["in_use"] is False
        assert http.get("/network/ports/0.0.0.0/19132").json()["in_use"] is False


def test_use_true_on_the_operators_port_is_idempotent_and_false_frees_it(
    lightd: ServedDaemon,
) -> None:
    with api(lightd) as http:
        first = http.put("/network/ports/0.0.0.0/25566/use", json={"in_use": True})
        again = http.put("/network/ports/0.0.0.0/25566/use", json={"in_use": True})
        assert (first.json()["changed"], again.json()["changed"]) == (True, False)
        taken = http.post("/containers", json={
            "internal_id": "mc-5", "image": "busybox", "ports": [{"ip": "0.0.0.0", "port": 25566}]})
        assert taken.status_code == 409 and "marked in use by hand" in taken.json()["error"]
        freed = http.put("/network/ports/0.0.0.0/25566/use", json={"in_use": False})
        assert freed.status_code == 200 and freed.json()["changed"] is True
        assert entry(http, 25566)["in_use"] is False


def _write_inconsistent_state(database: Path) -> None:
    """Rows as a crash, an older lightd or a hand edit could leave them."""
    def container(internal_id: str, *ports: int) -> tuple[str, str]:
        body = {"internal_id": internal_id, "image": "busybox", "command": None, "env": {},
                "bindings": [["0.0.0.0", port, "tcp", port] for port in ports],
                "engine_id": None, "state": "running", "pending": None}
        return internal_id, json.dumps(body)

    with sqlite3.connect(database) as db:
        # 25565: held by a container nobody knows. 25566: bound by mc-a, but stored free.
        # 25567: bound by mc-a, stored as the operator's. 25568: held by mc-b, which binds 25569.
        db.execute("UPDATE ports SET in_use = 1, container = 'ghost' WHERE port = 25565")
        db.execute("UPDATE ports SET in_use = 1, container = NULL WHERE port = 25567")
        db.execute("UPDATE ports SET in_use = 1, container = 'mc-b' WHERE port = 25568")
        db.executemany("INSERT INTO containers (internal_id, body) VALUES (?, ?)",
                       [container("mc-a", 25566, 25567), container("mc-b", 25569)])


def test_start_up_repairs_every_disagreement_the_safe_way_and_reports_it(tmp_path: Path) -> None:
    daemon = ServedDaemon(_config(tmp_path))
    daemon.start()
    daemon.stop()
    _write_inconsistent_state(tmp_path / "data" / "lightd.sqlite3")

    daemon.start()
    try:
        with api(daemon) as http:
            holders = {p: (entry(http, p)["in_use"], entry(http, p)["container"])
                       for p in range(25565, 25570)}
            # Leak rather than double-allocate: a doubtful holder becomes the operator's, in use.
            assert holders == {25565: (True, None), 25566: (True, "mc-a"), 25567: (True, "mc-a"),
                               25568: (True, None), 25569: (True, "mc-b")}
            report = http.get("/api/v1/status").json()["startup"]["holders"]
            assert report["count"] == 5
            text = " ".join(report["problems"])
            for port in range(25565, 25570):
                assert f"0.0.0.0:{port}/tcp" in text
            assert "container ghost" in text
            # Nothing is free to hand out but what nobody holds: no free tcp port is left.
            assert http.get("/network/ports/random?protocol=tcp").status_code == 404
        assert "holder repaired at start-up" in daemon.tail()
        daemon.stop()
        daemon.start()  # the repair was saved: nothing left to repair
        with api(daemon) as http:
            assert http.get("/api/v1/status").json()["startup"]["holders"]["count"] == 0
            assert entry(http, 25566)["container"] == "mc-a"
    finally:
        daemon.stop()
