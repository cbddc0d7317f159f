"""A claim whose answer is encoded in pieces answers alike through both entrances, with the
bytes a one-piece encoding gives, and what it says is what the file holds."""

from __future__ import annotations

import httpx
import orjson

from lightd.api import create_app
from lightd.api.hot import ANSWER_PIECE
from lightd.bootstrap import build
from lightd.config import load_or_create
from tests.conftest import HEADERS, db_rows, write_test_config

COUNT = 2 * ANSWER_PIECE + 17  # three pieces
FIRST, LAST = 10000, 19999


async def big_claim(tmp_path, fast_path: bool) -> tuple[httpx.Response, list[tuple]]:
    daemon = build(load_or_create(write_test_config(tmp_path, pool={"host_check": False})))
    await daemon.start()
    try:
        transport = httpx.ASGITransport(app=create_app(daemon, fast_path=fast_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://lightd", headers=HEADERS) as http:
            added = await http.post(
                "/network/ports/bulk",
                json={"ip": "127.0.0.1", "protocol": "both", "ports": [f"{FIRST}-{LAST}"]},
            )
            assert added.status_code == 201, added.text
            response = await http.post(
                "/network/ports/claim",
                json={"count": COUNT, "protocol": "both", "ip": "127.0.0.1", "note": "naïve ✓"},
            )
            return response, db_rows(daemon)
    finally:
        await daemon.stop()


def check(response: httpx.Response, rows: list[tuple]) -> list[tuple]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    answer = response.json()
    assert response.content == orjson.dumps(answer)  # the bytes of the answer made in one go
    ports = answer["ports"]
    assert len(ports) == 2 * COUNT
    assert all(p["in_use"] and p["note"] == "naïve ✓" and p["container"] is None for p in ports)
    claimed = sorted((p["ip"], p["port"], p["protocol"], 1, None) for p in ports)
    assert len(set(claimed)) == len(claimed)
    by_protocol = {
        protocol: {p["port"] for p in ports if p["protocol"] == protocol} for protocol in ("tcp", "udp")
    }
    assert len(by_protocol["tcp"]) == COUNT and by_protocol["tcp"] == by_protocol["udp"]
    assert [row for row in rows if row[3]] == claimed  # durable, and nothing else in use
    return [sorted(p) for p in ports]  # random numbers: compare the shape of each entry


async def test_a_claim_answered_in_pieces_answers_alike_through_both_entrances(tmp_path):
    fast = check(*await big_claim(tmp_path / "fast", fast_path=True))
    routed = check(*await big_claim(tmp_path / "routed", fast_path=False))
    assert fast == routed
