"""``GET /metrics`` of a real `lightd serve`: values after known changes, the auth rule, labels."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lightd.api.middleware import AUTH_ERROR
from tests.conftest import HEADERS, TOKEN, write_test_config
from tests.e2e.daemon import ServedDaemon

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# What Prometheus 3 sends when it scrapes (scrape_protocols' default order).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# Ports outside ip_local_port_range, on loopback; the host check off so no host state matters.
POOL = {"initial_ports": [], "host_check": False}


@pytest.fixture
def served(tmp_path):
    daemon = ServedDaemon(write_test_config(tmp_path, pool=POOL))
    daemon.start()
    yield daemon
    daemon.stop()


def scrape(served: ServedDaemon, accept: str = PROMETHEUS_ACCEPT) -> Samples:
    response = httpx.get(served.url + "/metrics", headers={**BEARER, "Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def named(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def test_metrics_after_known_changes(served):
    with httpx.Client(base_url=served.url, headers=HEADERS) as client:
        assert scrape(served)[("lightd_claims_total", ())] == 0
        for protocol, ports in (("tcp", "20000-20009"), ("udp", "20000-20004")):
            added = client.post(
                "/network/ports/bulk", json={"ip": "127.0.0.1", "ports": [ports], "protocol": protocol}
            )
            assert added.status_code == 201, added.text
        claimed = client.post("/network/ports/claim", json={"count": 3, "protocol": "tcp"})
        assert claimed.status_code == 200 and len(claimed.json()["ports"]) == 3
        assert client.post("/network/ports/claim", json={"protocol": "udp"}).status_code == 200
        refused = client.post("/network/ports/claim", json={"count": 100, "protocol": "tcp"})
        assert refused.status_code == 409, refused.text
        assert client.get("/network/ports/random").status_code == 200
        # Two different raw paths of one route, and a path no route has.
        assert client.get("/network/ports/127.0.0.1/29999").status_code == 404
        assert client.get("/network/ports/1.2.3.4/5").status_code == 404
        assert client.get("/no/such/route").status_code == 404
        assert httpx.get(served.url + "/network/ports/random").status_code == 401
        transactions = client.get("/api/v1/status").json()["pool"]["transactions"]

    samples = scrape(served)
    assert value(samples, "lightd_claims_total") == 2
    assert value(samples, "lightd_claimed_ports_total") == 4
    assert value(samples, "lightd_claim_errors_total", reason="no_available_ports") == 1
    assert value(samples, "lightd_claim_errors_total", reason="storage") == 0
    assert value(samples, "lightd_pool_ports", protocol="tcp", state="free") == 7
    assert value(samples, "lightd_pool_ports", protocol="tcp", state="in_use") == 3
    assert value(samples, "lightd_pool_ports", protocol="udp", state="free") == 4
    assert value(samples, "lightd_pool_ports", protocol="udp", state="in_use") == 1
    assert value(samples, "lightd_pool_available_ports", protocol="tcp") == 7
    assert value(samples, "lightd_pool_available_ports", protocol="udp") == 4
    # Two adds, two claims: one transaction each, of 10 + 5 + 3 + 1 entries and the event that
    # tells of each.
    assert transactions == 4
    assert value(samples, "lightd_store_commit_seconds_count") == transactions
    assert value(samples, "lightd_store_commit_changes_count") == transactions
    assert value(samples, "lightd_store_commit_changes_sum") == 19 + 4
    assert value(samples, "lightd_store_commit_changes_bucket", le="5.0") == 2  # 3 + 1 and 1 + 1
    assert value(samples, "lightd_store_commit_seconds_sum") > 0

    requests = "lightd_http_requests_total"
    assert value(samples, requests, method="POST", route="/network/ports/bulk", status="201") == 2
    assert value(samples, requests, method="POST", route="/network/ports/claim", status="200") == 2
    assert value(samples, requests, method="POST", route="/network/ports/claim", status="409") == 1
    assert value(samples, requests, method="GET", route="/network/ports/random", status="200") == 1
    assert value(samples, requests, method="GET", route="/network/ports/random", status="401") == 1
    assert value(samples, requests, method="GET", route="/network/ports/{ip}/{port}", status="404") == 2
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 1
    assert value(samples, requests, method="GET", route="/metrics", status="200") == 1
    routes = {dict(labels)["route"] for labels in named(samples, requests)}
    assert not any("1.2.3.4" in route or "29999" in route or "such" in route for route in routes)
    durations = named(samples, "lightd_http_request_duration_seconds_count")
    assert durations[(("method", "GET"), ("route", "/network/ports/{ip}/{port}"))] == 2
    assert durations[(("method", "POST"), ("route", "/network/ports/claim"))] == 3

    assert named(samples, "lightd_firewall_rules") == {}  # the tests' firewall is off
    assert {dict(labels)["type"] for labels in named(samples, "lightd_repair_findings")} == {
        "squatter",
        "orphan",
        "idle",
        "firewall_drift",
    }
    assert ("lightd_reserved_ports", ()) in samples
    assert value(samples, "process_resident_memory_bytes") > 0


def test_methods_outside_the_api_share_one_label(served):
    with httpx.Client(base_url=served.url, headers=HEADERS) as client:
        for method in ("PROPFIND", "MKCOL", "LOCK"):  # methods HTTP parsers know
            assert client.request(method, "/network/ports").status_code == 405
    found = named(scrape(served), "lightd_http_requests_total")
    assert found[(("method", "other"), ("route", "/network/ports"), ("status", "405"))] == 3
    assert not any(dict(labels)["method"] in {"FOO", "BAR", "BAZ"} for labels in found)


def test_metrics_needs_the_token_but_not_the_vendor_accept(served):
    url = served.url + "/metrics"
    for headers in ({}, {"Accept": "text/plain"}, {"Authorization": "Bearer lightd_wrong_token_000000"}):
        refused = httpx.get(url, headers=headers)
        assert refused.status_code == 401
        assert refused.json() == {"error": AUTH_ERROR}
    for accept in ("text/plain", PROMETHEUS_ACCEPT, HEADERS["Accept"]):
        assert ("lightd_claims_total", ()) in scrape(served, accept)
    assert httpx.get(url, headers=BEARER).status_code == 200  # no Accept at all
    # The exception is this one GET: elsewhere, and for another method, the vendor type stays due.
    plain = {**BEARER, "Accept": "text/plain"}
    assert httpx.get(served.url + "/api/v1/status", headers=plain).status_code == 406
    assert httpx.get(served.url + "/metrics/", headers=plain).status_code == 406
    assert httpx.post(url, headers=plain).status_code == 406


def test_metrics_turned_off(tmp_path):
    daemon = ServedDaemon(write_test_config(tmp_path, pool=POOL, metrics={"enabled": False}))
    daemon.start()
    try:
        answer = httpx.get(daemon.url + "/metrics", headers=BEARER)
        assert answer.status_code == 404
        assert answer.json() == {"error": "Metrics are turned off (metrics.enabled is false)"}
        assert httpx.get(daemon.url + "/metrics").status_code == 401  # the token still comes first
        with httpx.Client(base_url=daemon.url, headers=HEADERS) as client:
            added = client.post("/network/ports", json={"ip": "127.0.0.1", "port": 20000})
            assert added.status_code == 201
            assert client.post("/network/ports/claim", json={}).status_code == 200
    finally:
        daemon.stop()


def test_firewall_rules_by_family(tmp_path, ns):
    """The rules of lightd's chain, counted per family, in a private network namespace."""
    config = write_test_config(tmp_path, pool=POOL, firewall={"enabled": True, "netns": ns.path})
    daemon = ServedDaemon(config)
    daemon.start()
    try:
        start = {(("family", "ipv4"),): 0, (("family", "ipv6"),): 0}
        assert named(scrape(daemon), "lightd_firewall_rules") == start
        with httpx.Client(base_url=daemon.url, headers=HEADERS) as client:
            for body in (
                {"ip": "127.0.0.1", "ports": ["20000-20002"], "protocol": "tcp"},
                {"ip": "::", "ports": [20005], "protocol": "udp"},
            ):
                assert client.post("/network/ports/bulk", json=body).status_code == 201
        rules = named(scrape(daemon), "lightd_firewall_rules")
        assert rules == {(("family", "ipv4"),): 3, (("family", "ipv6"),): 1}
        assert len(ns.rules("LIGHTD", 4)) == 3 and len(ns.rules("LIGHTD", 6)) == 1
    finally:
        daemon.stop()
