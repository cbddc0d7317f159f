"""Allocation beyond the seed: atomic claims, ranges, filters, notes, real-host checks."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from tests.conftest import db_rows
from tests.ports import quiet_port


async def add_range(client, ports, protocol="tcp", ip="0.0.0.0"):
    response = await client.post("/network/ports/bulk", json={"ip": ip, "protocol": protocol, "ports": ports})
    assert response.status_code == 201, response.text
    return response.json()


async def test_claim_marks_the_port_in_use_durably_and_keeps_the_note(client, daemon):
    response = await client.post("/network/ports/claim", json={"count": 1, "note": "lobby"})
    assert response.status_code == 200
    [port] = response.json()["ports"]
    assert port["in_use"] is True and port["note"] == "lobby"
    assert (port["ip"], port["port"], "tcp", 1, None) in db_rows(daemon)
    got = (await client.get(f"/network/ports/0.0.0.0/{port['port']}")).json()
    assert got["note"] == "lobby" and got["in_use"] is True


async def test_claim_of_more_than_available_claims_nothing(client, daemon):
    before = db_rows(daemon)
    response = await client.post("/network/ports/claim", json={"count": 6})
    assert response.status_code == 409
    assert response.json() == {"error": "No available ports in pool"}
    assert db_rows(daemon) == before


async def test_64_concurrent_claims_never_hand_out_a_port_twice(client, daemon):
    await add_range(client, ["30000-30099"])
    responses = await asyncio.gather(
        *[client.post("/network/ports/claim", json={"count": 2}) for _ in range(64)]
    )
    claimed = [(p["ip"], p["port"], p["protocol"]) for r in responses if r.status_code == 200
               for p in r.json()["ports"]]
    assert len(claimed) == len(set(claimed))
    ok = sum(r.status_code == 200 for r in responses)
    assert ok == 52  # 105 free ports, two per claim: 52 claims succeed, the rest get 409
    assert all(r.status_code in (200, 409) for r in responses)
    assert sum(row[3] for row in db_rows(daemon)) == len(claimed) == 104


async def test_claim_both_protocols_returns_one_number_free_on_tcp_and_udp(client):
    await add_range(client, ["20000-20009"], protocol="udp")
    await add_range(client, ["20005-20020"], protocol="tcp")
    for _ in range(5):
        response = await client.post("/network/ports/claim", json={"protocol": "both"})
        assert response.status_code == 200
        tcp, udp = response.json()["ports"]
        assert (tcp["protocol"], udp["protocol"]) == ("tcp", "udp")
        assert tcp["port"] == udp["port"] and 20005 <= tcp["port"] <= 20009
    response = await client.post("/network/ports/claim", json={"protocol": "both"})
    assert response.status_code == 409


async def test_contiguous_claim_returns_consecutive_numbers_on_one_ip(client):
    await add_range(client, [27015, 27016, "27018-27020", 27030], ip="127.0.0.1")
    response = await client.post(
        "/network/ports/claim", json={"count": 3, "contiguous": True, "ip": "127.0.0.1"})
    assert response.status_code == 200
    assert [p["port"] for p in response.json()["ports"]] == [27018, 27019, 27020]
    again = await client.post(
        "/network/ports/claim", json={"count": 2, "contiguous": True, "ip": "127.0.0.1"})
    assert [p["port"] for p in again.json()["ports"]] == [27015, 27016]
    none_left = await client.post(
        "/network/ports/claim", json={"count": 2, "contiguous": True, "ip": "127.0.0.1"})
    assert none_left.status_code == 409


async def test_contiguous_both_protocols(client):
    await add_range(client, ["28000-28010"], protocol="both", ip="127.0.0.1")
    await client.put("/network/ports/127.0.0.1/28001/use?protocol=udp", json={"in_use": True})
    response = await client.post(
        "/network/ports/claim",
        json={"count": 9, "contiguous": True, "protocol": "both", "ip": "127.0.0.1"})
    assert response.status_code == 200
    ports = response.json()["ports"]
    assert sorted({p["port"] for p in ports}) == list(range(28002, 28011))
    assert len(ports) == 18


async def test_bulk_add_a_whole_range_and_report_existing(client, daemon):
    body = await add_range(client, ["1-65535"], protocol="both")
    assert body["added_count"] == 2 * 65535 - 5
    assert body["skipped_count"] == 5
    assert {s["port"] for s in body["skipped"]} == set(range(25565, 25570))
    assert len(db_rows(daemon)) == 2 * 65535


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"ip": "0.0.0.0", "ports": ["10-5"]}, "ends before it starts"),
        ({"ip": "0.0.0.0", "ports": [0]}, "ports[0] must be an integer from 1 to 65535"),
        ({"ip": "0.0.0.0", "ports": ["1-70000"]}, "must be an integer from 1 to 65535"),
        ({"ip": "0.0.0.0", "ports": []}, "must name at least one port"),
        ({"ip": "0.0.0.0", "ports": ["abc"]}, "range like"),
        ({"ip": "0.0.0.0", "ports": [1], "protocol": "icmp"}, '"tcp", "udp" or "both"'),
        ({"ports": [1]}, "ip is required"),
    ],
)
async def test_bulk_add_with_bad_input_is_400_and_adds_nothing(client, daemon, body, message):
    before = db_rows(daemon)
    response = await client.post("/network/ports/bulk", json=body)
    assert response.status_code == 400 and message in response.json()["error"], response.text
    assert db_rows(daemon) == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"count": 0}, "count must be an integer from 1 to 65535"),
        ({"count": "2"}, "count must be an integer from 1 to 65535"),
        ({"protocol": "icmp"}, '"tcp", "udp" or "both"'),
        ({"contiguous": "yes"}, "contiguous"),
        ({"ip": "nope"}, "ip is not a valid"),
    ],
)
async def test_claim_with_bad_input_is_400_and_claims_nothing(client, daemon, body, message):
    before = db_rows(daemon)
    response = await client.post("/network/ports/claim", json=body)
    assert response.status_code == 400 and message in response.json()["error"], response.text
    assert db_rows(daemon) == before


async def test_list_filters_and_pages(client):
    await add_range(client, ["100-109"], protocol="udp", ip="127.0.0.1")
    await client.put("/network/ports/127.0.0.1/105/use", json={"in_use": True})
    udp = (await client.get("/network/ports?protocol=udp")).json()
    assert udp["total"] == 10 and {p["protocol"] for p in udp["ports"]} == {"udp"}
    used = (await client.get("/network/ports?in_use=true")).json()
    assert [(p["ip"], p["port"]) for p in used["ports"]] == [("127.0.0.1", 105)]
    page = (await client.get("/network/ports?ip=127.0.0.1&limit=3&offset=2")).json()
    assert [p["port"] for p in page["ports"]] == [102, 103, 104] and page["total"] == 10
    everything = (await client.get("/network/ports")).json()
    assert everything["total"] == len(everything["ports"]) == 15


@pytest.mark.parametrize(
    "query", ["limit=-1", "limit=x", "offset=1.5", "in_use=maybe", "protocol=icmp", "ip=1.2.3"]
)
async def test_list_with_bad_filter_is_400(client, query):
    response = await client.get(f"/network/ports?{query}")
    assert response.status_code == 400 and set(response.json()) == {"error"}


async def test_random_filters_by_ip_and_protocol(client):
    await add_range(client, [5000], protocol="udp", ip="127.0.0.1")
    for _ in range(10):
        body = (await client.get("/network/ports/random?ip=127.0.0.1")).json()
        assert (body["ip"], body["port"], body["protocol"]) == ("127.0.0.1", 5000, "udp")
    assert (await client.get("/network/ports/random?protocol=udp&ip=0.0.0.0")).status_code == 404


async def test_adding_an_ip_this_host_does_not_have_is_refused(client, daemon):
    before = db_rows(daemon)
    for path, body in (("/network/ports", {"ip": "203.0.113.7", "port": 25565}),
                       ("/network/ports/bulk", {"ip": "203.0.113.7", "ports": [1]})):
        response = await client.post(path, json=body)
        assert response.status_code == 400
        assert "203.0.113.7" in response.json()["error"]
    assert db_rows(daemon) == before
    assert (await client.post("/network/ports", json={"ip": "127.0.0.9", "port": 1})).status_code == 201
    assert (await client.post("/network/ports", json={"ip": "::", "port": 1})).status_code == 201


def unbound_port(kind: int) -> int:
    """A port no socket holds right now, outside the range outgoing connections take from."""
    return quiet_port("tcp" if kind == socket.SOCK_STREAM else "udp", "0.0.0.0")


def bound_socket(kind: int, host: str, family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, kind)
    sock.bind((host, 0))
    if kind == socket.SOCK_STREAM:
        sock.listen()
    return sock


@pytest.mark.parametrize(
    ("kind", "bind_host", "entry_ip"),
    [
        (socket.SOCK_STREAM, "0.0.0.0", "0.0.0.0"),
        (socket.SOCK_STREAM, "127.0.0.1", "127.0.0.1"),
        (socket.SOCK_STREAM, "127.0.0.1", "0.0.0.0"),
        (socket.SOCK_STREAM, "0.0.0.0", "127.0.0.1"),
        (socket.SOCK_DGRAM, "0.0.0.0", "0.0.0.0"),
        (socket.SOCK_DGRAM, "127.0.0.1", "127.0.0.1"),
        (socket.SOCK_DGRAM, "127.0.0.1", "0.0.0.0"),
    ],
)
async def test_a_port_bound_on_the_host_is_never_handed_out(client, kind, bind_host, entry_ip):
    protocol = "tcp" if kind == socket.SOCK_STREAM else "udp"
    defaults = [{"ip": "0.0.0.0", "port": p} for p in range(25565, 25570)]
    await client.post("/network/ports/bulk-delete", json={"ports": defaults})
    with bound_socket(kind, bind_host) as taken:
        port = taken.getsockname()[1]
        await add_range(client, [port, unbound_port(kind)], protocol, entry_ip)
        filters = f"ip={entry_ip}&protocol={protocol}"
        for _ in range(30):
            body = (await client.get(f"/network/ports/random?{filters}")).json()
            assert body["port"] != port
        claimed = await client.post(
            "/network/ports/claim", json={"ip": entry_ip, "protocol": protocol, "count": 1})
        assert claimed.json()["ports"][0]["port"] != port
        refused = await client.post(
            "/network/ports/claim", json={"ip": entry_ip, "protocol": protocol, "count": 1})
        assert refused.status_code == 409, "the only other entry is bound on the host"
    # Once the socket is closed, the port is handed out again when the shared snapshot ages:
    # 50 ms, or 50x the time a snapshot took to read on a loaded machine.
    deadline = time.monotonic() + 5
    while True:
        await asyncio.sleep(0.05)
        freed = await client.post(
            "/network/ports/claim", json={"ip": entry_ip, "protocol": protocol, "count": 1})
        if freed.status_code != 409 or time.monotonic() > deadline:
            break
    assert freed.status_code == 200 and freed.json()["ports"][0]["port"] == port


async def test_host_check_can_be_turned_off(tmp_path):
    import httpx

    from lightd.api import create_app
    from lightd.bootstrap import build
    from lightd.config import load_or_create
    from tests.conftest import HEADERS, write_test_config

    daemon = build(load_or_create(write_test_config(tmp_path, pool={"host_check": False})))
    await daemon.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(daemon)),
                                     base_url="http://lightd", headers=HEADERS) as http:
            with bound_socket(socket.SOCK_STREAM, "127.0.0.1") as taken:
                port = taken.getsockname()[1]
                await add_range(http, [port], "tcp", "127.0.0.1")
                body = (await http.get("/network/ports/random?ip=127.0.0.1")).json()
                assert body["port"] == port
    finally:
        await daemon.stop()
