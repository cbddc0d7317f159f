"""The kernel reservation end to end: a real `lightd serve`, as root, in a private netns.

The daemon runs inside a throw-away network namespace (``nsenter --net=...``), so the list it
keeps is that namespace's ``net.ipv4.ip_local_reserved_ports``, never the host's. The test talks
to it from the main thread moved into the same namespace (its loopback is the daemon's).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import HEADERS, write_test_config
from tests.e2e.daemon import ServedDaemon
from tests.netns import NetNs, entered

pytestmark = pytest.mark.slow

SYSCTL = "/proc/sys/net/ipv4/ip_local_reserved_ports"
SEED_ADD_KEYS = {"message", "ip", "port", "protocol", "note"}


def kernel_list(ns: NetNs) -> str:
    return ns.run("cat", SYSCTL).strip()


def reserve_by_hand(ns: NetNs, text: str) -> None:
    """Another program of the host (an operator's sysctl -w) writing the namespace's list."""
    ns.run("sysctl", "-q", "-w", f"net.ipv4.ip_local_reserved_ports={text}")


@pytest.fixture
def inside(ns: NetNs) -> Iterator[NetNs]:
    ns.run("ip", "link", "set", "lo", "up")
    ns.run("sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=40000 40100")
    with entered(ns.path) as name:
        assert name == ns.ns
        yield ns


def daemon_in(ns: NetNs, tmp_path: Path, reserve: bool) -> ServedDaemon:
    config = write_test_config(
        tmp_path,
        pool={
            "reserve_ports": reserve,
            "initial_ports": [{"ip": "0.0.0.0", "ports": "40000-40049", "protocol": "tcp"}],
        },
    )
    return ServedDaemon(config, prefix=ns.prefix)


def call(served: ServedDaemon, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, served.url + path, headers=HEADERS, timeout=60, **kwargs)


def reserved_status(served: ServedDaemon) -> dict[str, object]:
    status = call(served, "GET", "/api/v1/status").json()
    return dict(status["reserved_ports"])


def reserved_metric(served: ServedDaemon) -> float:
    scrape = httpx.get(
        served.url + "/metrics", headers={"Authorization": HEADERS["Authorization"]}, timeout=60
    )
    assert scrape.status_code == 200, scrape.text
    [value] = re.findall(r"^lightd_reserved_ports (\S+)$", scrape.text, re.MULTILINE)
    return float(value)


def set_reserve(served: ServedDaemon, reserve: bool) -> None:
    raw = json.loads(served.config.read_text())
    raw["pool"]["reserve_ports"] = reserve
    served.config.write_text(json.dumps(raw))


def test_the_reservation_follows_the_pool_and_keeps_everybody_elses(inside, tmp_path):
    reserve_by_hand(inside, "8080,40049")  # somebody else's, before lightd ever ran
    served = daemon_in(inside, tmp_path, reserve=True)
    served.start()
    try:
        assert kernel_list(inside) == "8080,40000-40049"
        status = reserved_status(served)
        assert status["enabled"] is True and status["count"] == 50
        assert str(status["reason"]).startswith("enabled: running as root")
        assert reserved_metric(served) == 50

        # Added with the entry, kept while any entry of the number is left, removed with the last.
        added = call(
            served, "POST", "/network/ports", json={"ip": "0.0.0.0", "port": 40060, "protocol": "udp"}
        )
        assert added.status_code == 201 and set(added.json()) == SEED_ADD_KEYS, "no warnings"
        assert kernel_list(inside) == "8080,40000-40049,40060"
        assert (
            call(
                served, "POST", "/network/ports", json={"ip": "127.0.0.1", "port": 40060, "protocol": "tcp"}
            ).status_code
            == 201
        )
        assert call(served, "DELETE", "/network/ports/0.0.0.0/40060").status_code == 200
        assert kernel_list(inside) == "8080,40000-40049,40060", "127.0.0.1:40060/tcp holds it"
        assert call(served, "DELETE", "/network/ports/127.0.0.1/40060").status_code == 200
        assert kernel_list(inside) == "8080,40000-40049"

        bulk = call(
            served,
            "POST",
            "/network/ports/bulk",
            json={"ip": "0.0.0.0", "protocol": "both", "ports": ["40070-40079", 40090]},
        )
        assert bulk.status_code == 201 and "warnings" not in bulk.json()
        assert kernel_list(inside) == "8080,40000-40049,40070-40079,40090"
        gone = call(
            served,
            "POST",
            "/network/ports/bulk-delete",
            json={
                "ports": [
                    {"ip": "0.0.0.0", "port": p, "protocol": proto}
                    for p in [*range(40070, 40080), 40090]
                    for proto in ("tcp", "udp")
                ]
            },
        )
        assert gone.json()["deleted_count"] == 22
        assert kernel_list(inside) == "8080,40000-40049"

        # 40049 was somebody else's before lightd listed it: it stays when its entry goes.
        assert call(served, "DELETE", "/network/ports/0.0.0.0/40049").status_code == 200
        assert call(served, "DELETE", "/network/ports/0.0.0.0/40000").status_code == 200
        assert kernel_list(inside) == "8080,40001-40049"
        assert reserved_status(served)["count"] == 48 and reserved_metric(served) == 48
    finally:
        served.kill()  # a crash: lightd's numbers stay listed, its record says which they are

    # While it is down: a delete reached the store but not the kernel (killed in between), and
    # somebody else reserves one more number.
    with sqlite3.connect(tmp_path / "data" / "lightd.sqlite3") as db:
        db.execute("DELETE FROM ports WHERE port = 40001")
    reserve_by_hand(inside, kernel_list(inside) + ",9090")
    served.start()
    try:
        assert kernel_list(inside) == "8080,9090,40002-40049", "reconciled at start"
        started = reserved_status(served)["started"]
        assert isinstance(started, dict) and started["found_ours"] == 48
        assert started["kept_others"] == 3 and reserved_metric(served) == 47
    finally:
        served.stop()

    # Turned off: the next start takes back lightd's numbers, and adds warn.
    set_reserve(served, False)
    served.start()
    try:
        assert kernel_list(inside) == "8080,9090,40049"
        assert not (tmp_path / "data" / "reserved_ports.json").exists()
        status = reserved_status(served)
        assert status["enabled"] is False and status["count"] == 0
        assert status["reason"] == "turned off in the settings (pool.reserve_ports is false)"
        assert reserved_metric(served) == 0

        inside_range = call(
            served, "POST", "/network/ports", json={"ip": "0.0.0.0", "port": 40080, "protocol": "tcp"}
        )
        assert inside_range.status_code == 201
        body = inside_range.json()
        assert {k: body[k] for k in SEED_ADD_KEYS} == {
            "message": "Port added to pool",
            "ip": "0.0.0.0",
            "port": 40080,
            "protocol": "tcp",
            "note": None,
        }
        [warning] = body["warnings"]
        assert warning.startswith(
            "port 40080 is inside the kernel's ephemeral port range "
            "40000-40100 (net.ipv4.ip_local_port_range)"
        )
        assert "pool.reserve_ports is false" in warning and "address already in use" in warning
        outside = call(
            served, "POST", "/network/ports", json={"ip": "0.0.0.0", "port": 30000, "protocol": "tcp"}
        )
        assert outside.status_code == 201 and "warnings" not in outside.json()

        bulk = call(
            served,
            "POST",
            "/network/ports/bulk",
            json={"ip": "0.0.0.0", "ports": ["39990-40010", 40095], "protocol": "udp"},
        )
        assert bulk.status_code == 201
        assert bulk.json()["warnings"][0].startswith("ports 40000-40010,40095 are inside")
        quiet = call(served, "POST", "/network/ports/bulk", json={"ip": "0.0.0.0", "ports": [30001]})
        assert "warnings" not in quiet.json()
        assert kernel_list(inside) == "8080,9090,40049", "nothing reserved while it is off"
    finally:
        served.stop()


def test_a_repair_pass_puts_back_the_numbers_another_program_dropped(inside, tmp_path):
    served = daemon_in(inside, tmp_path, reserve=True)
    served.start()
    try:
        assert kernel_list(inside) == "40000-40049"
        reserve_by_hand(inside, "8080")  # an operator's sysctl -w that forgot the pool's ports
        assert call(served, "POST", "/api/v1/repair").status_code == 200
        assert kernel_list(inside) == "8080,40000-40049"  # the pool's back, theirs kept
        assert reserved_status(served)["count"] == 50
    finally:
        served.stop()
