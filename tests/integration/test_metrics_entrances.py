"""The fast path and FastAPI's routes count the same requests under the same labels."""

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lightd.api import create_app
from lightd.bootstrap import build
from lightd.config import load_or_create
from tests.conftest import HEADERS, TOKEN, write_test_config
from tests.integration.test_api_fast_path import CASES


async def counted(tmp_path, fast_path: bool) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """lightd's counters after CASES (and one unauthorized random) went through."""
    daemon = build(load_or_create(write_test_config(tmp_path, pool={"host_check": False})))
    await daemon.start()
    try:
        transport = httpx.ASGITransport(app=create_app(daemon, fast_path=fast_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://lightd") as http:
            for method, path, body in CASES:
                await http.request(method, path, json=body, headers=HEADERS)
            assert (await http.get("/network/ports/random")).status_code == 401
            text = (await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).text
    finally:
        await daemon.stop()
    samples = {}
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            for sample in family.samples:
                if sample.name.startswith("lightd_") and sample.name.endswith("_total"):
                    samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_both_entrances_count_alike(tmp_path):
    fast = await counted(tmp_path / "fast", True)
    routed = await counted(tmp_path / "routed", False)
    assert fast == routed

    def requests(route: str, status: str, method: str) -> float:
        labels = (("method", method), ("route", route), ("status", status))
        return fast[("lightd_http_requests_total", labels)]

    assert requests("/api/v1/public/ping", "200", "GET") == 1
    assert requests("/network/ports/random", "200", "GET") == 1
    assert requests("/network/ports/random", "404", "GET") == 1  # udp: none in the pool
    assert requests("/network/ports/random", "400", "GET") == 5
    assert requests("/network/ports/random", "401", "GET") == 1
    assert requests("/network/ports/claim", "200", "POST") == 2
    assert requests("/network/ports/claim", "400", "POST") == 2
    assert requests("/network/ports/claim", "409", "POST") == 2
    # The bodies refused with 400 never reached the pool; the two 409s did.
    assert fast[("lightd_claims_total", ())] == 2
    assert fast[("lightd_claimed_ports_total", ())] == 3
    assert fast[("lightd_claim_errors_total", (("reason", "no_available_ports"),))] == 2
