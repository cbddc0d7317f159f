"""Bad input of every kind: a clear 400 naming the field, and nothing changed."""

import pytest

from tests.conftest import db_rows

ADD = "/network/ports"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"port": 25570, "protocol": "tcp"}, "ip is required"),
        ({"ip": "0.0.0.0", "protocol": "tcp"}, "port is required"),
        ({"ip": "0.0.0.0", "port": "25570"}, "port must be an integer from 1 to 65535"),
        ({"ip": "0.0.0.0", "port": True}, "port must be an integer from 1 to 65535"),
        ({"ip": "0.0.0.0", "port": 25570.0}, "port must be an integer from 1 to 65535"),
        ({"ip": "0.0.0.0", "port": 0}, "port must be an integer from 1 to 65535"),
        ({"ip": "0.0.0.0", "port": 65536}, "port must be an integer from 1 to 65535"),
        ({"ip": "0.0.0.0", "port": -5}, "port must be an integer from 1 to 65535"),
        ({"ip": "999.0.0.1", "port": 25570}, "ip is not a valid IPv4 or IPv6 address"),
        ({"ip": "localhost", "port": 25570}, "ip is not a valid IPv4 or IPv6 address"),
        ({"ip": 167772165, "port": 25570}, "ip must be a string"),
        ({"ip": "0.0.0.0", "port": 25570, "protocol": "sctp"}, 'protocol must be "tcp" or "udp"'),
        ({"ip": "0.0.0.0", "port": 25570, "protocol": 6}, 'protocol must be "tcp" or "udp"'),
        ({"ip": "0.0.0.0", "port": 25570, "note": 5}, "note"),
    ],
)
async def test_add_with_bad_field_is_400_naming_it(client, daemon, body, message):
    before = db_rows(daemon)
    response = await client.post(ADD, json=body)
    assert response.status_code == 400
    assert set(response.json()) == {"error"}
    assert message in response.json()["error"]
    assert db_rows(daemon) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "Request body is not valid JSON"),
        (b"", "Request body is required"),
        (b"[1, 2]", "Request body must be a JSON object"),
        (b'"text"', "Request body must be a JSON object"),
        (b"null", "Request body"),
    ],
)
async def test_malformed_body_is_400(client, daemon, content, message):
    before = db_rows(daemon)
    response = await client.post(ADD, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)
    assert db_rows(daemon) == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "in_use is required"),
        ({"in_use": "true"}, "in_use must be true or false"),
        ({"in_use": 1}, "in_use must be true or false"),
        ({"in_use": None}, "in_use must be true or false"),
    ],
)
async def test_use_with_bad_body_is_400(client, daemon, body, message):
    before = db_rows(daemon)
    response = await client.put("/network/ports/0.0.0.0/25565/use", json=body)
    assert response.status_code == 400 and message in response.json()["error"]
    assert db_rows(daemon) == before


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/network/ports/0.0.0.0/abc", "port must be an integer from 1 to 65535"),
        ("/network/ports/0.0.0.0/0", "port must be an integer from 1 to 65535"),
        ("/network/ports/0.0.0.0/70000", "port must be an integer from 1 to 65535"),
        ("/network/ports/not-an-ip/25565", "ip is not a valid IPv4 or IPv6 address"),
        ("/network/ports/0.0.0.0/25565?protocol=icmp", 'protocol must be "tcp" or "udp"'),
    ],
)
async def test_bad_path_or_query_is_400_for_get_use_and_delete(client, daemon, path, message):
    before = db_rows(daemon)
    base, _, query = path.partition("?")
    use_path = f"{base}/use" + (f"?{query}" if query else "")
    for response in (
        await client.get(path),
        await client.delete(path),
        await client.put(use_path, json={"in_use": True}),
    ):
        assert response.status_code == 400, response.text
        assert message in response.json()["error"]
    assert db_rows(daemon) == before


@pytest.mark.parametrize(
    ("query", "message"),
    [("protocol=icmp", 'protocol must be "tcp" or "udp"'), ("ip=nope", "ip is not a valid")],
)
async def test_random_with_bad_filter_is_400(client, query, message):
    response = await client.get(f"/network/ports/random?{query}")
    assert response.status_code == 400 and message in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "ports is required"),
        ({"ports": "25565"}, "ports must be a JSON array"),
        ({"ports": [{"ip": "0.0.0.0"}]}, "ports[0].port is required"),
        ({"ports": [{"ip": "0.0.0.0", "port": 25565}, {"ip": "0.0.0.0", "port": "x"}]},
         "ports[1].port must be an integer from 1 to 65535"),
        ({"ports": [{"ip": "bad", "port": 25565}]}, "ports[0].ip is not a valid"),
        ({"ports": [5]}, "ports[0] must be a JSON object"),
    ],
)
async def test_bulk_delete_with_bad_item_is_400_and_deletes_nothing(client, daemon, body, message):
    before = db_rows(daemon)
    response = await client.post("/network/ports/bulk-delete", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"], response.json()
    assert db_rows(daemon) == before


async def test_body_over_one_mib_is_413(client, daemon):
    before = db_rows(daemon)
    big = b'{"ip": "0.0.0.0", "port": 1, "note": "' + b"x" * (1024 * 1024) + b'"}'
    response = await client.post(ADD, content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "1 MiB" in response.json()["error"]
    assert db_rows(daemon) == before


async def test_chunked_body_over_one_mib_is_413(client, daemon):
    async def chunks():
        yield b'{"ip": "0.0.0.0", "port": 1, "note": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    before = db_rows(daemon)
    response = await client.post(ADD, content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert db_rows(daemon) == before
