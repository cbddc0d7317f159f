"""SIGKILL `lightd serve` at each step of a container's create, rebind and delete, on a real engine.

The daemon runs with ``LIGHTD_CRASH_AT=<step>`` and kills itself when it reaches that step (see
lightd.crash_points), so the kill lands exactly between two writes. A second daemon then starts
from the same database. Afterwards the container must run on its old ports or its new ones,
never both and never none; the engine must have exactly one container for it, answering on
those ports; and the pool's holders must say the same. A create that never answered and a delete
leave nothing at all. The entries are wildcard ones, tcp and udp, as game servers use them.
"""

from __future__ import annotations

import signal

import httpx
import pytest

from lightd.adapters.engine import DockerEngine
from tests.conftest import HEADERS
from tests.crash_cases import CASES
from tests.e2e.conftest import engine_config
from tests.e2e.daemon import ServedDaemon
from tests.engine_support import (
    IMAGE,
    LISTENER_TCP_UDP,
    connection_refused,
    free_port,
    read_from,
    udp_round_trip,
    udp_silent,
    unique_name,
)

pytestmark = pytest.mark.slow


def call(daemon: ServedDaemon, method: str, path: str, **kwargs):
    return httpx.request(method, daemon.url + path, headers=HEADERS, timeout=120, **kwargs)


def ports_json(tcp: int, udp: int) -> list[dict]:
    return [
        {"ip": "0.0.0.0", "port": tcp, "protocol": "tcp", "container_port": 8080},
        {"ip": "0.0.0.0", "port": udp, "protocol": "udp", "container_port": 8080},
    ]


def labelled(eng: DockerEngine, name: str) -> list[dict]:
    return [dict(i) for i in eng.list_managed() if i["internal_id"] == name]


@pytest.mark.parametrize(
    ("step", "operation", "shared", "ends_on"),
    CASES,
    ids=[f"{c[0]}{'-shared' if c[2] else ''}" for c in CASES],
)
def test_a_kill_at_each_step_ends_on_one_set_of_ports(
    tmp_path,
    engine_url,
    engine,
    request,
    monkeypatch,
    step,
    operation,
    shared,
    ends_on,
):
    name = unique_name(request)
    old = (free_port("tcp", "0.0.0.0"), free_port("udp", "0.0.0.0"))
    new = (old[0] if shared else free_port("tcp", "0.0.0.0"), free_port("udp", "0.0.0.0"))
    config = engine_config(tmp_path, engine_url)
    monkeypatch.setenv("LIGHTD_CRASH_AT", step)
    doomed = ServedDaemon(config)
    doomed.start()
    try:
        for port, protocol in {(old[0], "tcp"), (old[1], "udp"), (new[0], "tcp"), (new[1], "udp")}:
            added = call(
                doomed, "POST", "/network/ports", json={"ip": "0.0.0.0", "port": port, "protocol": protocol}
            )
            assert added.status_code == 201, added.text
        body = {
            "internal_id": name,
            "image": IMAGE,
            "startup_command": LISTENER_TCP_UDP,
            "ports": ports_json(*old),
        }
        if operation != "create":
            assert call(doomed, "POST", "/containers", json=body).status_code == 201
        with pytest.raises(httpx.TransportError):  # it dies before it answers
            if operation == "create":
                call(doomed, "POST", "/containers", json=body)
            elif operation == "rebind":
                call(doomed, "POST", f"/containers/{name}/rebind-network", json={"ports": ports_json(*new)})
            else:
                call(doomed, "DELETE", f"/containers/{name}")
        assert doomed.process is not None
        assert doomed.process.wait(timeout=30) == -signal.SIGKILL, doomed.tail()
    finally:
        doomed.kill()
    monkeypatch.delenv("LIGHTD_CRASH_AT")

    daemon = ServedDaemon(config)
    daemon.start()
    try:
        entries = {
            (e["port"], e["protocol"]): e for e in call(daemon, "GET", "/network/ports").json()["ports"]
        }
        found = call(daemon, "GET", f"/containers/{name}")
        if ends_on is None:
            assert found.status_code == 404, found.text
            assert labelled(engine, name) == []
            assert not any(e["in_use"] for e in entries.values())
            assert connection_refused(old[0])
            return
        kept, dropped = (old, new) if ends_on == "old" else (new, old)
        assert found.status_code == 200, found.text
        shown = found.json()
        assert shown["state"] == "running"
        assert sorted((p["port"], p["protocol"]) for p in shown["ports"]) == sorted(
            [(kept[0], "tcp"), (kept[1], "udp")]
        )
        [only] = labelled(engine, name)  # never both, never none
        assert only["id"] == shown["engine_id"] and only["running"], only
        assert only["name"] == name
        assert sorted((b.host_port, b.protocol) for b in only["bindings"]) == sorted(
            [(kept[0], "tcp"), (kept[1], "udp")]
        )
        assert read_from(kept[0]).startswith(b"hello")
        assert udp_round_trip(kept[1], payload=b"still there?") == b"still there?"
        if dropped[0] != kept[0]:
            assert connection_refused(dropped[0])
        assert udp_silent(dropped[1])
        held = {key for key, e in entries.items() if e["in_use"]}
        assert held == {(kept[0], "tcp"), (kept[1], "udp")}
        assert all(entries[key]["container"] == name for key in held)
    finally:
        daemon.stop()
