"""The seed page's own curl examples, run with curl against a real `lightd serve` process."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import TOKEN

pytestmark = pytest.mark.slow

AUTH = ["-H", f"Authorization: Bearer {TOKEN}", "-H", "Accept: Application/vnd.pkglatv1+json"]
JSON = ["-H", "Content-Type: application/json"]


def curl(served, method: str, path: str, body: str | None = None) -> tuple[int, dict]:
    argv = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method,
            served.url + path, *AUTH]
    if body is not None:
        argv += [*JSON, "-d", body]
    out = subprocess.run(argv, capture_output=True, check=True, text=True, timeout=20).stdout
    text, _, status = out.rpartition("\n")
    return int(status), json.loads(text)


def seed_keys(body: dict, keys: tuple[str, ...]) -> dict:
    return {k: body[k] for k in keys}


def test_the_seed_walkthrough_answers_the_seed_bodies(served):
    # Add Port to Pool (the fresh pool has 25565-25569/tcp, so add the seed's udp example first)
    status, body = curl(served, "POST", "/network/ports",
                        '{\n    "ip": "0.0.0.0",\n    "port": 19132,\n    "protocol": "udp"\n  }')
    assert status == 201
    assert seed_keys(body, ("message", "ip", "port", "protocol")) == {
        "message": "Port added to pool", "ip": "0.0.0.0", "port": 19132, "protocol": "udp"}

    # The seed's exact add example meets the existing default entry: Port Already Exists
    status, body = curl(served, "POST", "/network/ports",
                        '{\n    "ip": "0.0.0.0",\n    "port": 25565,\n    "protocol": "tcp"\n  }')
    assert (status, body) == (409, {"error": "Port already exists in pool"})

    # Get Specific Port
    status, body = curl(served, "GET", "/network/ports/0.0.0.0/25565")
    assert status == 200
    assert seed_keys(body, ("ip", "port", "protocol", "in_use")) == {
        "ip": "0.0.0.0", "port": 25565, "protocol": "tcp", "in_use": False}

    # Mark Port as In Use
    status, body = curl(served, "PUT", "/network/ports/0.0.0.0/25566/use", '{"in_use": true}')
    assert status == 200
    assert seed_keys(body, ("message", "ip", "port", "in_use")) == {
        "message": "Port usage updated", "ip": "0.0.0.0", "port": 25566, "in_use": True}

    # List All Ports: the seed's three example entries are there with the seed's values
    status, body = curl(served, "GET", "/network/ports")
    assert status == 200
    listed = {(p["ip"], p["port"], p["protocol"]): p["in_use"] for p in body["ports"]}
    assert listed[("0.0.0.0", 25565, "tcp")] is False
    assert listed[("0.0.0.0", 25566, "tcp")] is True
    assert listed[("0.0.0.0", 19132, "udp")] is False

    # Get Random Available Port: never the one in use, and it stays free
    for _ in range(20):
        status, body = curl(served, "GET", "/network/ports/random")
        assert status == 200 and body["in_use"] is False
        assert (body["ip"], body["port"], body["protocol"]) != ("0.0.0.0", 25566, "tcp")
    status, again = curl(served, "GET", f"/network/ports/{body['ip']}/{body['port']}"
                                        f"?protocol={body['protocol']}")
    assert again["in_use"] is False

    # Delete Port
    status, body = curl(served, "DELETE", "/network/ports/0.0.0.0/25565")
    assert (status, body) == (200, {"message": "Port deleted from pool"})
    # Port Not Found
    status, body = curl(served, "GET", "/network/ports/0.0.0.0/25565")
    assert (status, body) == (404, {"error": "Port not found in pool"})

    # Bulk Delete Ports (25565 is gone already: reported, not fatal)
    status, body = curl(served, "POST", "/network/ports/bulk-delete",
                        '{\n    "ports": [\n      {"ip": "0.0.0.0", "port": 25567},\n'
                        '      {"ip": "0.0.0.0", "port": 25568}\n    ]\n  }')
    assert status == 200
    assert seed_keys(body, ("message", "deleted_count")) == {
        "message": "Deleted 2 ports from pool", "deleted_count": 2}

    # No Available Ports
    curl(served, "PUT", "/network/ports/0.0.0.0/25569/use", '{"in_use": true}')
    curl(served, "PUT", "/network/ports/0.0.0.0/19132/use", '{"in_use": true}')
    status, body = curl(served, "GET", "/network/ports/random")
    assert (status, body) == (404, {"error": "No available ports in pool"})


def test_the_token_is_required_over_http(served):
    out = subprocess.run(
        ["curl", "-sS", "-i", served.url + "/network/ports",
         "-H", "Accept: Application/vnd.pkglatv1+json"],
        capture_output=True, text=True, check=True, timeout=20,
    ).stdout
    assert out.startswith("HTTP/1.1 401")
    assert "www-authenticate: bearer" in out.lower()
