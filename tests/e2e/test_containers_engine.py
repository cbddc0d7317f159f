"""The seed's port binding workflow end to end: `lightd serve` driving each real engine.

Each test runs on Podman and on Docker Engine (``[podman]``/``[docker]``); on Docker Engine the
daemon and the test run inside the engine's network namespace (tests/engine_support.py).

A listener inside the container answers "hello" through the host port lightd bound it to.
"""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.conftest import HEADERS
from tests.engine_support import (
    IMAGE,
    LISTENER,
    connection_refused,
    free_port,
    read_from,
    unique_name,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def served(engine_served):
    return engine_served


def call(served, method, path, **kwargs):
    return httpx.request(method, served.url + path, headers=HEADERS, timeout=120, **kwargs)


def entry(served, port):
    return call(served, "GET", f"/network/ports/127.0.0.1/{port}").json()


def test_create_rebind_fail_and_delete_on_the_real_engine(served, engine, request):
    name = unique_name(request)
    first, second, third = free_port(), free_port(), free_port()
    for port in (first, second, third):
        added = call(served, "POST", "/network/ports", json={"ip": "127.0.0.1", "port": port})
        assert added.status_code == 201

    created = call(served, "POST", "/containers", json={
        "internal_id": name, "image": IMAGE, "startup_command": LISTENER,
        "ports": [{"ip": "127.0.0.1", "port": first, "container_port": 8080}],
    })
    assert created.status_code == 201, created.text
    assert read_from(first).startswith(b"hello")
    assert entry(served, first)["container"] == name
    live = call(served, "GET", f"/containers/{name}").json()
    assert live["engine_state"] == "running"
    published = engine.inspect(live["engine_id"])["bindings"]
    assert [(b.host_ip, b.host_port, b.protocol, b.container_port) for b in published] == [
        ("127.0.0.1", first, "tcp", 8080)]

    rebound = call(served, "POST", f"/containers/{name}/rebind-network",
                   json={"ports": [{"ip": "127.0.0.1", "port": second, "container_port": 8080}]})
    assert rebound.status_code == 200, rebound.text
    assert read_from(second).startswith(b"hello")
    assert connection_refused(first)
    assert entry(served, first)["in_use"] is False and entry(served, second)["container"] == name

    # A rebind onto a port some other process holds fails, and nothing changes.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", third))
        squatter.listen()
        failed = call(served, "POST", f"/containers/{name}/rebind-network",
                      json={"ports": [{"ip": "127.0.0.1", "port": third, "container_port": 8080}]})
        assert failed.status_code == 409, failed.text
        assert str(third) in failed.json()["error"]
    assert read_from(second).startswith(b"hello")
    assert entry(served, third)["in_use"] is False
    after = call(served, "GET", f"/containers/{name}").json()
    assert [p["port"] for p in after["ports"]] == [second] and after["engine_state"] == "running"

    deleted = call(served, "DELETE", f"/containers/{name}")
    assert deleted.status_code == 200
    assert connection_refused(second)
    assert entry(served, second)["in_use"] is False
    assert not [c for c in engine.list_managed() if c["internal_id"] == name]


def test_restart_keeps_containers_and_reports_one_the_engine_lost(served, engine, request):
    kept, lost = unique_name(request), unique_name(request)
    ports = [free_port(), free_port()]
    for port in ports:
        call(served, "POST", "/network/ports", json={"ip": "127.0.0.1", "port": port})
    for name, port in zip((kept, lost), ports, strict=True):
        response = call(served, "POST", "/containers", json={
            "internal_id": name, "image": IMAGE, "startup_command": LISTENER,
            "ports": [{"ip": "127.0.0.1", "port": port, "container_port": 8080}],
        })
        assert response.status_code == 201, response.text
    served.kill()
    [lost_info] = [info for info in engine.list_managed() if info["internal_id"] == lost]
    engine.remove(lost_info["id"], force=True)  # behind lightd's back, while it is down
    served.start()
    states = {c["internal_id"]: c["state"] for c in call(served, "GET", "/containers").json()["containers"]}
    assert states[kept] == "running" and states[lost] == "missing"
    assert entry(served, ports[0])["container"] == kept
    assert entry(served, ports[1])["container"] == lost, "a lost container's ports stay held"
    assert read_from(ports[0]).startswith(b"hello")
    for name in (kept, lost):
        assert call(served, "DELETE", f"/containers/{name}").status_code == 200
    assert all(not entry(served, p)["in_use"] for p in ports)
