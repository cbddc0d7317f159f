"""The seed's endpoints through the real app and a real SQLite file."""

import asyncio

import pytest

from tests.conftest import HEADERS, TOKEN, db_rows

SEED_ADD = {"ip": "0.0.0.0", "port": 25565, "protocol": "tcp"}


async def test_new_pool_starts_with_the_default_minecraft_range(client):
    response = await client.get("/network/ports")
    assert response.status_code == 200
    assert [(p["ip"], p["port"], p["protocol"], p["in_use"]) for p in response.json()["ports"]] == [
        ("0.0.0.0", port, "tcp", False) for port in range(25565, 25570)
    ]


async def test_add_answers_201_with_the_seed_body(client):
    response = await client.post("/network/ports", json={"ip": "0.0.0.0", "port": 19132, "protocol": "udp"})
    assert response.status_code == 201
    body = response.json()
    assert body["message"] == "Port added to pool"
    assert (body["ip"], body["port"], body["protocol"]) == ("0.0.0.0", 19132, "udp")


async def test_duplicate_add_is_409_port_already_exists(client, daemon):
    before = db_rows(daemon)
    response = await client.post("/network/ports", json=SEED_ADD)
    assert response.status_code == 409
    assert response.json() == {"error": "Port already exists in pool"}
    assert db_rows(daemon) == before


async def test_add_stores_canonical_ip_and_lowercase_protocol(client, daemon):
    response = await client.post("/network/ports", json={"ip": "::0", "port": 27015, "protocol": "UDP"})
    assert response.status_code == 201
    assert (response.json()["ip"], response.json()["protocol"]) == ("::", "udp")
    assert ("::", 27015, "udp", 0, None) in db_rows(daemon)


async def test_add_without_protocol_means_tcp(client):
    response = await client.post("/network/ports", json={"ip": "127.0.0.1", "port": 30000})
    assert response.status_code == 201 and response.json()["protocol"] == "tcp"


async def test_same_port_can_be_added_for_tcp_and_udp(client):
    response = await client.post("/network/ports", json={**SEED_ADD, "protocol": "udp"})
    assert response.status_code == 201


async def test_get_specific_port_answers_the_seed_body(client):
    response = await client.get("/network/ports/0.0.0.0/25565")
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("ip", "port", "protocol", "in_use")} == {
        "ip": "0.0.0.0", "port": 25565, "protocol": "tcp", "in_use": False,
    }


async def test_get_unknown_port_is_404(client):
    response = await client.get("/network/ports/0.0.0.0/1")
    assert response.status_code == 404
    assert response.json() == {"error": "Port not found in pool"}


async def test_ipv6_entries_are_reachable_by_path(client):
    await client.post("/network/ports", json={"ip": "0:0::1", "port": 443})
    response = await client.get("/network/ports/0:0:0::1/443")
    assert response.status_code == 200 and response.json()["ip"] == "::1"


async def test_ambiguous_ip_port_needs_protocol(client):
    await client.post("/network/ports", json={**SEED_ADD, "protocol": "udp"})
    response = await client.get("/network/ports/0.0.0.0/25565")
    assert response.status_code == 409
    assert "tcp" in response.json()["error"] and "udp" in response.json()["error"]
    response = await client.get("/network/ports/0.0.0.0/25565", params={"protocol": "udp"})
    assert response.status_code == 200 and response.json()["protocol"] == "udp"
    response = await client.delete("/network/ports/0.0.0.0/25565")
    assert response.status_code == 409


async def test_random_returns_an_available_port_and_does_not_mark_it(client, daemon):
    response = await client.get("/network/ports/random")
    assert response.status_code == 200
    body = response.json()
    assert body["in_use"] is False and 25565 <= body["port"] <= 25569
    assert all(row[3] == 0 for row in db_rows(daemon))


async def test_random_on_an_exhausted_pool_is_404_no_available_ports(client):
    for port in range(25565, 25570):
        await client.put(f"/network/ports/0.0.0.0/{port}/use", json={"in_use": True})
    response = await client.get("/network/ports/random")
    assert response.status_code == 404
    assert response.json() == {"error": "No available ports in pool"}


async def test_use_marks_and_unmarks_with_the_seed_body(client, daemon):
    response = await client.put("/network/ports/0.0.0.0/25565/use", json={"in_use": True})
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("message", "ip", "port", "in_use")} == {
        "message": "Port usage updated", "ip": "0.0.0.0", "port": 25565, "in_use": True,
    }
    assert body["changed"] is True
    assert ("0.0.0.0", 25565, "tcp", 1, None) in db_rows(daemon)
    again = await client.put("/network/ports/0.0.0.0/25565/use", json={"in_use": True})
    assert again.status_code == 200 and again.json()["changed"] is False
    freed = await client.put("/network/ports/0.0.0.0/25565/use", json={"in_use": False})
    assert freed.json()["in_use"] is False
    assert ("0.0.0.0", 25565, "tcp", 0, None) in db_rows(daemon)


async def test_concurrent_marks_over_http_change_the_port_once(client):
    responses = await asyncio.gather(
        *[client.put("/network/ports/0.0.0.0/25566/use", json={"in_use": True}) for _ in range(40)]
    )
    assert all(r.status_code == 200 for r in responses)
    assert sum(r.json()["changed"] for r in responses) == 1


async def test_delete_answers_the_seed_body_and_removes_the_row(client, daemon):
    response = await client.delete("/network/ports/0.0.0.0/25565")
    assert response.status_code == 200
    assert response.json() == {"message": "Port deleted from pool"}
    assert ("0.0.0.0", 25565, "tcp", 0, None) not in db_rows(daemon)
    again = await client.delete("/network/ports/0.0.0.0/25565")
    assert again.status_code == 404 and again.json() == {"error": "Port not found in pool"}


async def test_hand_marked_port_can_be_deleted(client):
    await client.put("/network/ports/0.0.0.0/25565/use", json={"in_use": True})
    assert (await client.delete("/network/ports/0.0.0.0/25565")).status_code == 200


async def test_bulk_delete_answers_the_seed_body(client, daemon):
    response = await client.post(
        "/network/ports/bulk-delete",
        json={"ports": [{"ip": "0.0.0.0", "port": 25565}, {"ip": "0.0.0.0", "port": 25566}]},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Deleted 2 ports from pool" and body["deleted_count"] == 2
    assert body["not_found"] == [] and body["skipped"] == []
    assert [row[1] for row in db_rows(daemon)] == [25567, 25568, 25569]


async def test_bulk_delete_lists_missing_entries_without_failing(client):
    response = await client.post(
        "/network/ports/bulk-delete",
        json={"ports": [{"ip": "0.0.0.0", "port": 25565}, {"ip": "10.1.1.1", "port": 5, "protocol": "udp"}]},
    )
    body = response.json()
    assert response.status_code == 200 and body["deleted_count"] == 1
    assert body["not_found"] == [{"ip": "10.1.1.1", "port": 5, "protocol": "udp"}]


async def test_bulk_delete_skips_ports_held_by_a_container(client, daemon):
    entry = daemon.pool.pool.get(("0.0.0.0", 25565, "tcp"))
    daemon.pool.pool.set_in_use(entry, True, container="mc-1")
    response = await client.post(
        "/network/ports/bulk-delete",
        json={"ports": [{"ip": "0.0.0.0", "port": 25565}, {"ip": "0.0.0.0", "port": 25566}]},
    )
    body = response.json()
    assert body["deleted_count"] == 1
    assert [(s["port"], s["container"]) for s in body["skipped"]] == [(25565, "mc-1")]


async def test_bulk_delete_reports_repeated_items_once_in_order(client, daemon):
    """A body may name the same entry many times: each shows once, where it first appeared."""
    entry = daemon.pool.pool.get(("0.0.0.0", 25569, "tcp"))
    daemon.pool.pool.set_in_use(entry, True, container="mc-1")
    missing = [{"ip": "10.1.1.1", "port": p} for p in (7, 5, 7)] * 2000
    held = [{"ip": "0.0.0.0", "port": 25569}] * 2000
    present = [{"ip": "0.0.0.0", "port": 25566}, {"ip": "0.0.0.0", "port": 25565}] * 2000
    response = await client.post(
        "/network/ports/bulk-delete", json={"ports": [*missing, *held, *present]})
    body = response.json()
    assert response.status_code == 200 and body["deleted_count"] == 2
    assert body["not_found"] == [{"ip": "10.1.1.1", "port": 7}, {"ip": "10.1.1.1", "port": 5}]
    assert [(s["port"], s["container"]) for s in body["skipped"]] == [(25569, "mc-1")]
    assert [row[1] for row in db_rows(daemon)] == [25567, 25568, 25569]


async def test_ping_needs_no_token_or_vendor(client):
    response = await client.get("/api/v1/public/ping", headers={"Authorization": "", "Accept": "*/*"})
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_openapi_and_docs_are_public(client):
    spec = await client.get("/openapi.json", headers={"Authorization": ""})
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {"/network/ports", "/network/ports/{ip}/{port}", "/network/ports/random",
            "/network/ports/{ip}/{port}/use", "/network/ports/bulk-delete"} <= set(paths)
    assert (await client.get("/docs", headers={"Authorization": ""})).status_code == 200


async def test_status_reports_pool_and_firewall(client):
    body = (await client.get("/api/v1/status")).json()
    assert body["pool"]["entries"] == 5 and body["firewall"]["enabled"] is False


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"bearer{TOKEN}"],
)
async def test_missing_or_wrong_token_is_401_with_www_authenticate(client, authorization):
    headers = {"Accept": HEADERS["Accept"]}
    if authorization is not None:
        headers["Authorization"] = authorization
    client.headers.pop("Authorization")
    response = await client.get("/network/ports", headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "error": "Invalid or missing Bearer token. Format: Authorization: Bearer lightd_<token>"
    }
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("accept", [None, "application/json", "*/*", "application/vnd.other+json"])
async def test_missing_vendor_accept_is_406(client, accept):
    client.headers.pop("Accept")
    headers = {} if accept is None else {"Accept": accept}
    response = await client.get("/network/ports", headers=headers)
    assert response.status_code == 406
    assert response.json() == {"error": "Invalid vendor. Expected: Application/vnd.pkglatv1+json"}


async def test_vendor_header_is_case_insensitive(client):
    response = await client.get("/network/ports", headers={"Accept": "APPLICATION/VND.PKGLATV1+JSON"})
    assert response.status_code == 200


async def test_auth_is_checked_before_the_vendor_header(client):
    response = await client.get("/network/ports", headers={"Authorization": "Bearer no", "Accept": "x"})
    assert response.status_code == 401


async def test_unknown_route_and_wrong_method_use_the_error_shape(client):
    missing = await client.get("/network/nothing")
    assert missing.status_code == 404 and missing.json() == {"error": "Not found"}
    wrong = await client.patch("/network/ports")
    assert wrong.status_code == 405 and wrong.json() == {"error": "Method not allowed"}
