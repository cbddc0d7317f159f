"""ping, random and claim answer the same through the fast path and through FastAPI's routes."""

import httpx

from lightd.api import create_app
from lightd.bootstrap import build
from lightd.config import load_or_create
from tests.conftest import HEADERS, write_test_config

CASES = [
    ("GET", "/api/v1/public/ping", None),
    ("GET", "/network/ports/random?protocol=udp", None),
    ("GET", "/network/ports/random?protocol=icmp", None),
    ("GET", "/network/ports/random?ip=nope", None),
    ("POST", "/network/ports/claim", {"count": 0}),
    ("POST", "/network/ports/claim", {"count": "2"}),
    ("POST", "/network/ports/claim", {"protocol": "both"}),
    ("POST", "/network/ports/claim", {"count": 9}),
    ("POST", "/network/ports/claim", {"count": 2, "note": "x"}),
    ("GET", "/network/ports/random", None),
    ("GET", "/network/ports/random?ip=", None),
    ("GET", "/network/ports/random?protocol=tcp&protocol=bad", None),
    ("GET", "/network/ports/random?protocol=", None),
    ("POST", "/network/ports/claim", None),
]


async def answers(tmp_path, fast_path: bool) -> list[tuple[int, object]]:
    daemon = build(load_or_create(write_test_config(tmp_path, pool={"host_check": False})))
    await daemon.start()
    try:
        transport = httpx.ASGITransport(app=create_app(daemon, fast_path=fast_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://lightd", headers=HEADERS) as http:
            results = []
            for method, path, body in CASES:
                response = await http.request(method, path, json=body)
                payload = response.json()
                if response.status_code == 200 and "ports" in payload:  # random choice: shape only
                    payload = sorted((p["protocol"], p["in_use"], p["note"]) for p in payload["ports"])
                elif response.status_code == 200 and "port" in payload:
                    payload = (payload["protocol"], payload["in_use"])
                results.append((response.status_code, payload))
            return results
    finally:
        await daemon.stop()


async def test_both_entrances_answer_alike(tmp_path):
    fast = await answers(tmp_path / "fast", True)
    routed = await answers(tmp_path / "routed", False)
    for case, via_fast, via_fastapi in zip(CASES, fast, routed, strict=True):
        assert via_fast == via_fastapi, case
    assert [status for status, _ in fast] == [200, 404, 400, 400, 400, 400, 409, 409, 200, 200,
                                              400, 400, 400, 200]
