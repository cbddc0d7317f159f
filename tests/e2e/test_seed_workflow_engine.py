"""The seed page's "Port Binding Workflow", run with curl against `lightd serve` on each real engine.

The seed's own requests, word for word (paths, headers, bodies, the answers' fields): add
0.0.0.0:25565/tcp and 0.0.0.0:19132/udp to the pool, create a container on them (README's
`POST /containers`: the seed names the step, not its body), rebind it to two other pool ports
(25566/tcp and 19133/udp), delete it. At each step the container's tcp listener answers and its
udp echo echoes on the ports the pool says it holds, and nowhere else.

On Docker Engine the test runs inside that engine's network namespace, where these ports are
free. On Podman they are the host's own: a port some program of this host holds skips the run
and says which: that is the host's state, not lightd's.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import TOKEN
from tests.e2e.conftest import engine_config
from tests.e2e.daemon import ServedDaemon
from tests.engine_support import (
    IMAGE,
    LISTENER_TCP_UDP,
    EngineTarget,
    connection_refused,
    is_free,
    read_from,
    udp_round_trip,
    udp_silent,
    unique_name,
)

pytestmark = pytest.mark.slow

# The seed's headers, as its examples spell them.
AUTH = ["-H", f"Authorization: Bearer {TOKEN}", "-H", "Accept: Application/vnd.pkglatv1+json"]
JSON = ["-H", "Content-Type: application/json"]

SEED_TCP, SEED_UDP = 25565, 19132  # the seed's examples
NEXT_TCP, NEXT_UDP = 25566, 19133  # where the rebind moves them


@pytest.fixture
def seed_ports(engine_target: EngineTarget) -> None:
    """The four ports must be free where the engine publishes (always so in Docker's namespace)."""
    busy = [
        f"0.0.0.0:{port}/{protocol}"
        for port, protocol in ((SEED_TCP, "tcp"), (SEED_UDP, "udp"), (NEXT_TCP, "tcp"), (NEXT_UDP, "udp"))
        if not is_free(port, protocol, "0.0.0.0")
    ]
    if busy:
        pytest.skip(f"{engine_target.kind}: the seed's ports are held where it publishes: {', '.join(busy)}")


@pytest.fixture
def served(tmp_path, engine_url, seed_ports):
    daemon = ServedDaemon(engine_config(tmp_path, engine_url))  # empty: as the seed's add example needs
    daemon.start()
    yield daemon
    daemon.stop()


def curl(served, method: str, path: str, body: str | None = None) -> tuple[int, dict]:
    argv = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, served.url + path, *AUTH]
    if body is not None:
        argv += [*JSON, "-d", body]
    out = subprocess.run(argv, capture_output=True, check=True, text=True, timeout=120).stdout
    text, _, status = out.rpartition("\n")
    return int(status), json.loads(text)


def seed_body(port: int, protocol: str) -> str:
    """The seed's "Add Port to Pool" body, spaced as the page spaces it."""
    return f'{{\n    "ip": "0.0.0.0",\n    "port": {port},\n    "protocol": "{protocol}"\n  }}'


def pool_says(served) -> dict[str, tuple[bool, str | None]]:
    """The seed's "List All Ports": ``port/protocol`` -> (in_use, the container holding it)."""
    status, body = curl(served, "GET", "/network/ports")
    assert status == 200
    return {f"{p['port']}/{p['protocol']}": (p["in_use"], p.get("container")) for p in body["ports"]}


def held(seed: str | None, moved: str | None, seed_tcp_deleted: bool = False) -> dict:
    """What :func:`pool_says` must say when ``seed``/``moved`` hold the seed's/the rebind's ports."""
    expected = {
        f"{SEED_TCP}/tcp": (seed is not None, seed),
        f"{SEED_UDP}/udp": (seed is not None, seed),
        f"{NEXT_TCP}/tcp": (moved is not None, moved),
        f"{NEXT_UDP}/udp": (moved is not None, moved),
    }
    if seed_tcp_deleted:
        del expected[f"{SEED_TCP}/tcp"]
    return expected


def seed_keys(body: dict, *keys: str) -> dict:
    """The keys the seed shows (answers may carry more, CONTRACT.md says)."""
    return {k: body[k] for k in keys}


def specific(served, port: int) -> dict:
    """The seed's "Get Specific Port", with the seed's keys only."""
    status, body = curl(served, "GET", f"/network/ports/0.0.0.0/{port}")
    assert status == 200, body
    return seed_keys(body, "ip", "port", "protocol", "in_use")


def answers(tcp: int, udp: int, tag: str) -> None:
    assert read_from(tcp) == b"hello\n"
    sent = f"{tag} {udp}".encode()
    assert udp_round_trip(udp, payload=sent) == sent


def silent(tcp: int, udp: int) -> None:
    assert connection_refused(tcp)
    assert udp_silent(udp)


def test_the_seed_binding_workflow_with_curl_on_the_real_engine(served, engine, request):
    name = unique_name(request)

    # 1. Add ports to pool: the seed's example, and the same for its udp port and the two the
    #    rebind will take.
    for port, protocol in ((SEED_TCP, "tcp"), (SEED_UDP, "udp"), (NEXT_TCP, "tcp"), (NEXT_UDP, "udp")):
        status, body = curl(served, "POST", "/network/ports", seed_body(port, protocol))
        assert status == 201, body
        assert seed_keys(body, "message", "ip", "port", "protocol") == {
            "message": "Port added to pool",
            "ip": "0.0.0.0",
            "port": port,
            "protocol": protocol,
        }
    assert specific(served, SEED_TCP) == {
        "ip": "0.0.0.0",
        "port": SEED_TCP,
        "protocol": "tcp",
        "in_use": False,
    }
    assert specific(served, SEED_UDP) == {
        "ip": "0.0.0.0",
        "port": SEED_UDP,
        "protocol": "udp",
        "in_use": False,
    }
    assert pool_says(served) == held(None, None)

    # 2. Create container with ports: they are marked in_use: true.
    ports = [
        {"ip": "0.0.0.0", "port": SEED_TCP, "protocol": "tcp", "container_port": 8080},
        {"ip": "0.0.0.0", "port": SEED_UDP, "protocol": "udp", "container_port": 8080},
    ]
    create = {"internal_id": name, "image": IMAGE, "startup_command": LISTENER_TCP_UDP, "ports": ports}
    status, body = curl(served, "POST", "/containers", json.dumps(create))
    assert status == 201, body
    assert (body["message"], body["internal_id"], body["state"]) == ("Container created", name, "running")
    assert body["ports"] == ports
    answers(SEED_TCP, SEED_UDP, name)
    assert specific(served, SEED_TCP)["in_use"] is True
    assert specific(served, SEED_UDP)["in_use"] is True
    assert pool_says(served) == held(name, None)
    silent(NEXT_TCP, NEXT_UDP)

    # 3. Rebind if needed: old ports are freed, new ports are marked as in use.
    moved = [
        {"ip": "0.0.0.0", "port": NEXT_TCP, "protocol": "tcp", "container_port": 8080},
        {"ip": "0.0.0.0", "port": NEXT_UDP, "protocol": "udp", "container_port": 8080},
    ]
    status, body = curl(served, "POST", f"/containers/{name}/rebind-network", json.dumps({"ports": moved}))
    assert status == 200, body
    assert body["ports"] == moved
    answers(NEXT_TCP, NEXT_UDP, name)
    silent(SEED_TCP, SEED_UDP)
    assert specific(served, SEED_TCP)["in_use"] is False
    assert specific(served, SEED_UDP)["in_use"] is False
    assert pool_says(served) == held(None, name)
    status, body = curl(served, "GET", f"/containers/{name}")
    assert (status, body["state"], body["engine_state"], body["ports"]) == (200, "running", "running", moved)

    # A port the container holds cannot be deleted from the pool; one the rebind freed can.
    status, body = curl(served, "DELETE", f"/network/ports/0.0.0.0/{NEXT_TCP}")
    assert status == 409 and name in body["error"]
    status, body = curl(served, "DELETE", f"/network/ports/0.0.0.0/{SEED_TCP}")
    assert (status, seed_keys(body, "message")) == (200, {"message": "Port deleted from pool"})

    # Delete: both ports freed, nothing answers.
    status, body = curl(served, "DELETE", f"/containers/{name}")
    assert status == 200, body
    silent(NEXT_TCP, NEXT_UDP)
    assert pool_says(served) == held(None, None, seed_tcp_deleted=True)
    assert not [c for c in engine.list_managed() if c["internal_id"] == name]
