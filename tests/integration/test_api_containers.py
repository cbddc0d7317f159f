"""The container workflow through the real app, with runtime.kind none (bookkeeping only)."""

import pytest

from tests.conftest import db_rows


async def create(client, internal_id="mc-1", ports=None, **extra):
    body = {"internal_id": internal_id, "image": "localhost/busybox:latest",
            "ports": ports if ports is not None else [{"ip": "0.0.0.0", "port": 25565}], **extra}
    return await client.post("/containers", json=body)


async def test_workflow_create_rebind_delete_with_the_none_runtime(client, daemon):
    created = await create(client, ports=[{"ip": "0.0.0.0", "port": 25565, "container_port": 25565},
                                          {"container_port": 8080, "protocol": "tcp"}],
                           env={"EULA": "TRUE", "RCON_PASSWORD": "secret"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["message"] == "Container created" and body["state"] == "running"
    assert body["env"] == ["EULA", "RCON_PASSWORD"] and "secret" not in created.text
    ports = {(p["port"], p["container_port"]) for p in body["ports"]}
    assert (25565, 25565) in ports and len(ports) == 2
    entry = (await client.get("/network/ports/0.0.0.0/25565")).json()
    assert entry["in_use"] is True and entry["container"] == "mc-1"

    status = await client.get("/api/v1/status")
    assert status.json()["runtime"]["kind"] == "none"

    rebound = await client.post("/containers/mc-1/rebind-network",
                                json={"ports": [{"ip": "0.0.0.0", "port": 25569}]})
    assert rebound.status_code == 200, rebound.text
    assert [p["port"] for p in rebound.json()["ports"]] == [25569]
    pool = (await client.get("/network/ports")).json()["ports"]
    listed = {(e["port"], e["in_use"], e["container"]) for e in pool}
    assert (25569, True, "mc-1") in listed and (25565, False, None) in listed
    assert sum(1 for _, used, _ in listed if used) == 1

    got = await client.get("/containers/mc-1")
    assert got.status_code == 200 and got.json()["internal_id"] == "mc-1"
    assert [c["internal_id"] for c in (await client.get("/containers")).json()["containers"]] == ["mc-1"]

    deleted = await client.delete("/containers/mc-1")
    assert deleted.status_code == 200 and deleted.json()["message"] == "Container deleted"
    assert all(row[3] == 0 for row in db_rows(daemon))


async def test_unknown_container_is_404(client):
    for response in (await client.get("/containers/nope"), await client.delete("/containers/nope"),
                     await client.post("/containers/nope/rebind-network", json={"ports": []})):
        assert response.status_code == 404
        assert response.json() == {"error": "Container nope not found"}


async def test_taken_missing_or_duplicate_is_409_naming_it_and_changes_nothing(client, daemon):
    assert (await create(client)).status_code == 201
    before = db_rows(daemon)
    taken = await create(client, "mc-2", [{"ip": "0.0.0.0", "port": 25566}, {"ip": "0.0.0.0", "port": 25565}])
    assert taken.status_code == 409
    assert "0.0.0.0:25565/tcp is already in use by container mc-1" in taken.json()["error"]
    missing = await create(client, "mc-2", [{"ip": "0.0.0.0", "port": 30000}])
    assert missing.status_code == 409 and "0.0.0.0:30000/tcp is not in the pool" in missing.json()["error"]
    duplicate = await create(client, "mc-1", [{"ip": "0.0.0.0", "port": 25566}])
    assert duplicate.status_code == 409 and duplicate.json()["error"] == "Container mc-1 already exists"
    none_left = await create(client, "mc-3", [{"container_port": 1}] * 5)
    assert none_left.status_code == 409 and none_left.json()["error"] == "No available ports in pool"
    assert db_rows(daemon) == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"image": "x", "ports": []}, "internal_id is required"),
        ({"internal_id": "bad id!", "image": "x"}, "internal_id must be 1 to 128 letters"),
        ({"internal_id": "-x", "image": "x"}, "internal_id must be"),
        ({"internal_id": "a"}, "image is required"),
        ({"internal_id": "a", "image": ""}, "image"),
        ({"internal_id": "a", "image": "x", "ports": [{"protocol": "tcp"}]}, "needs port"),
        ({"internal_id": "a", "image": "x", "ports": [{"port": 70000}]}, "ports[0].port must be an integer"),
        ({"internal_id": "a", "image": "x", "ports": [{"container_port": 0}]}, "container_port must be"),
        ({"internal_id": "a", "image": "x", "ports": [{"port": 25565, "protocol": "icmp"}]}, "protocol"),
        ({"internal_id": "a", "image": "x", "env": {"A": 1}}, "env"),
        ({"internal_id": "a", "image": "x", "ports": "25565"}, "ports must be a JSON array"),
    ],
)
async def test_create_with_bad_input_is_400_and_changes_nothing(client, daemon, body, message):
    before = db_rows(daemon)
    response = await client.post("/containers", json=body)
    assert response.status_code == 400 and message in response.json()["error"], response.text
    assert db_rows(daemon) == before
    assert (await client.get("/containers")).json()["containers"] == []


async def test_rebind_with_bad_input_is_400_and_keeps_the_bindings(client):
    await create(client)
    response = await client.post("/containers/mc-1/rebind-network", json={"ports": [{"port": "x"}]})
    assert response.status_code == 400
    assert [p["port"] for p in (await client.get("/containers/mc-1")).json()["ports"]] == [25565]
