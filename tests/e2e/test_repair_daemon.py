"""The repair loop end to end: a real ``lightd serve``, real sockets, iptables in a private
namespace, and both real engines.

Each finding is made for real: a socket the test binds on a free pool port (squatter), a rule
deleted from lightd's chain by hand (drift, repaired by the next timed pass and by POST), a
container removed behind lightd's back (orphan), a port marked in use with nothing bound on it
(idle after N passes). No test waits for a time to pass: the timed ones wait for what the pass
does (a rule back, a log line, a finding), up to a generous deadline.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.conftest import HEADERS, TOKEN, write_test_config
from tests.e2e.daemon import ServedDaemon
from tests.engine_support import (  # noqa: F401 - engine and engine_url are fixtures
    IMAGE,
    LISTENER,
    engine,
    engine_url,
    unique_name,
)
from tests.engine_support import free_port as engine_port
from tests.netns import NetNs
from tests.ports import quiet_port

pytestmark = pytest.mark.slow

RULE = ["-p", "tcp", "-m", "tcp", "--dport", "{port}", "-m", "comment", "--comment", "lightd",
        "-j", "ACCEPT"]  # fmt: skip
DEADLINE = 60.0


def call(daemon: ServedDaemon, method: str, path: str, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("headers", HEADERS)
    return httpx.request(method, daemon.url + path, timeout=120, **kwargs)


def repair(daemon: ServedDaemon) -> dict[str, Any]:
    answer = call(daemon, "POST", "/api/v1/repair")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert body["message"] == "Repair pass done"
    return body


def status(daemon: ServedDaemon) -> dict[str, Any]:
    body: dict[str, Any] = call(daemon, "GET", "/api/v1/status").json()["repair"]
    return body


def findings(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["type"] == kind]


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    """Poll ``check`` until it answers something true; fail naming ``what`` past the deadline."""
    deadline = time.monotonic() + DEADLINE
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {DEADLINE:g} s")
        time.sleep(0.05)


def assert_stops_cleanly(daemon: ServedDaemon) -> None:
    """SIGTERM while the loop runs (a pass may be under way): the app shuts down, nothing fails."""
    daemon.stop()
    log = daemon.tail()
    assert "Application shutdown complete" in log
    assert "Traceback" not in log and "repair pass failed" not in log and "was destroyed" not in log


@contextmanager
def served(config) -> Iterator[ServedDaemon]:
    daemon = ServedDaemon(config)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


# -- squatter ----------------------------------------------------------------------------------


@pytest.fixture
def squat_port() -> int:
    return quiet_port()


@pytest.fixture
def manual(tmp_path, squat_port) -> Iterator[ServedDaemon]:
    """Passes on POST only (repair.interval 0); a pool of one free port on 127.0.0.1."""
    config = write_test_config(
        tmp_path,
        repair={"interval": 0},
        pool={"initial_ports": [{"ip": "127.0.0.1", "ports": str(squat_port), "protocol": "both"}]},
    )
    with served(config) as daemon:
        yield daemon


def test_a_socket_bound_on_a_free_pool_port_is_a_squatter_until_it_closes(manual, squat_port):
    assert repair(manual)["findings"] == []
    entry = {"ip": "127.0.0.1", "port": squat_port, "protocol": "tcp"}
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", squat_port))
        squatter.listen()
        first = repair(manual)
        [found] = findings(first, "squatter")
        assert found["entry"] == entry
        assert f"127.0.0.1:{squat_port}/tcp LISTEN" in found["sockets"][0]
        assert "another process on this host has it bound" in found["message"]
        assert first["counts"] == {"squatter": 1, "orphan": 0, "idle": 0, "firewall_drift": 0}
        scraped = httpx.get(manual.url + "/metrics", headers={"Authorization": HEADERS["Authorization"]})
        assert scraped.status_code == 200
        assert 'lightd_repair_findings{type="squatter"} 1.0' in scraped.text
        assert 'lightd_repair_findings{type="orphan"} 0.0' in scraped.text
        second = repair(manual)
        assert findings(second, "squatter") == [found], "the same finding, since its first pass"
        shown = status(manual)
        assert shown["last_run"] == second["last_run"] and shown["findings"] == second["findings"]
        # A finding frees nothing and marks nothing: the port is only skipped while it is bound.
        got = call(manual, "GET", f"/network/ports/127.0.0.1/{squat_port}?protocol=tcp").json()
        assert got["in_use"] is False
    assert manual.tail().count(f"repair: squatter: 127.0.0.1:{squat_port}/tcp") == 1, "logged once"
    assert findings(repair(manual), "squatter") == [], "closed: no longer a squatter"
    assert status(manual)["passes"] == 4


def test_bad_input_to_the_repair_route_is_refused_and_runs_no_pass(manual):
    repair(manual)
    refused = {
        "a JSON body": ({"json": {"now": True}}, 400, "takes no request body"),
        "a body that is not JSON": ({"content": b"{now"}, 400, "not valid JSON"),
        "no token": ({"headers": {"Accept": HEADERS["Accept"]}}, 401, "Bearer"),
        "a wrong token": ({"headers": {**HEADERS, "Authorization": f"Bearer {TOKEN}x"}}, 401, "Bearer"),
        "no vendor type": ({"headers": {"Authorization": HEADERS["Authorization"],
                                        "Accept": "application/json"}}, 406, "vendor"),
    }  # fmt: skip
    for case, (kwargs, code, words) in refused.items():
        answer = call(manual, "POST", "/api/v1/repair", **kwargs)
        assert answer.status_code == code, case
        assert words in answer.json()["error"], case
    assert call(manual, "GET", "/api/v1/repair").status_code == 405
    assert status(manual)["passes"] == 1, "no refused request ran a pass"


# -- firewall drift ----------------------------------------------------------------------------


def firewall_config(tmp_path, ns: NetNs, interval: float):
    return write_test_config(
        tmp_path, firewall={"enabled": True, "netns": ns.path}, repair={"interval": interval}
    )


def test_a_rule_deleted_by_hand_is_put_back_by_the_next_timed_pass(tmp_path, ns):
    with served(firewall_config(tmp_path, ns, 0.3)) as daemon:
        rule = [word.format(port=25566) for word in RULE]
        before = ns.rules("LIGHTD")
        ns.run("iptables", "-D", "LIGHTD", *rule)
        assert len(ns.rules("LIGHTD")) == len(before) - 1
        wait_for("rule put back", lambda: sorted(ns.rules("LIGHTD")) == sorted(before))
        line = "repair: firewall_drift: Firewall drift: missing rule for 0.0.0.0:25566/tcp"
        wait_for("drift logged", lambda: line in daemon.tail())
        assert ns.save(4).count("-A INPUT -j LIGHTD") == 1
        assert status(daemon)["interval"] == 0.3
        assert_stops_cleanly(daemon)


def test_drift_is_repaired_by_post_and_reported_with_what_was_done(tmp_path, ns):
    with served(firewall_config(tmp_path, ns, 0)) as daemon:
        before = ns.rules("LIGHTD")
        ns.run("iptables", "-D", "LIGHTD", *[word.format(port=25566) for word in RULE])
        ns.run("iptables", "-A", "LIGHTD", *[word.format(port=25567) for word in RULE])
        ns.run("iptables", "-A", "LIGHTD", *[word.format(port=31999) for word in RULE])
        report = repair(daemon)
        drift = findings(report, "firewall_drift")
        assert sorted((f["drift"], f["entry"]["port"]) for f in drift) == [
            ("duplicate rule for 0.0.0.0:25567/tcp", 25567),
            ("missing rule for 0.0.0.0:25566/tcp", 25566),
            ("stale rule for 0.0.0.0:31999/tcp (no such pool entry)", 31999),
        ]
        assert all(f["repaired"] is True for f in drift)
        assert report["firewall"] == {"added": 1, "removed": 2, "drift_count": 3}
        assert sorted(ns.rules("LIGHTD")) == sorted(before), "repaired at once, live"
        assert findings(repair(daemon), "firewall_drift") == [], "nothing left to repair"


# -- orphan, on both engines ---------------------------------------------------------------------


@pytest.fixture
def engine_daemon(tmp_path, engine_url) -> Iterator[ServedDaemon]:  # noqa: F811
    config = write_test_config(
        tmp_path,
        runtime={"kind": "docker", "socket": engine_url, "stop_timeout": 1},
        pool={"initial_ports": []},
        repair={"interval": 0},
    )
    with served(config) as daemon:
        yield daemon


def test_a_container_removed_behind_lightds_back_leaves_orphans_that_stay_held(
    engine_daemon,
    engine,  # noqa: F811
    request,
):
    name = unique_name(request)
    port = engine_port()
    assert (
        call(engine_daemon, "POST", "/network/ports", json={"ip": "127.0.0.1", "port": port}).status_code
        == 201
    )
    created = call(engine_daemon, "POST", "/containers", json={
        "internal_id": name, "image": IMAGE, "startup_command": LISTENER,
        "ports": [{"ip": "127.0.0.1", "port": port, "container_port": 8080}],
    })  # fmt: skip
    assert created.status_code == 201, created.text
    assert findings(repair(engine_daemon), "orphan") == [], "the engine has it"

    engine.remove(created.json()["engine_id"], force=True)
    report = repair(engine_daemon)
    [orphan] = findings(report, "orphan")
    assert orphan["entry"] == {"ip": "127.0.0.1", "port": port, "protocol": "tcp"}
    assert orphan["container"] == name
    assert f"held by container {name}, which the engine no longer has" in orphan["message"]
    assert findings(report, "squatter") == [] and report["errors"] == {}
    held = call(engine_daemon, "GET", f"/network/ports/127.0.0.1/{port}").json()
    assert held["in_use"] is True and held["container"] == name, "a finding frees nothing"

    assert call(engine_daemon, "DELETE", f"/containers/{name}").status_code == 200
    assert findings(repair(engine_daemon), "orphan") == [], "deleted: its port is free again"


# -- idle ----------------------------------------------------------------------------------------


def test_a_port_marked_by_hand_with_nothing_bound_is_idle_after_n_passes(tmp_path):
    idle_port, busy_port = quiet_port(), quiet_port()
    config = write_test_config(
        tmp_path,
        repair={"interval": 0.2, "idle_passes": 3},
        pool={"initial_ports": [{"ip": "127.0.0.1", "ports": [idle_port, busy_port]}]},
    )
    with socket.socket() as server:  # the server of busy_port runs all along
        server.bind(("127.0.0.1", busy_port))
        server.listen()
        with served(config) as daemon:
            # Read first: a pass that ends after this may have looked at the ports marked next.
            counted_from = status(daemon)["passes"]
            for port in (idle_port, busy_port):
                marked = call(daemon, "PUT", f"/network/ports/127.0.0.1/{port}/use", json={"in_use": True})
                assert marked.status_code == 200
            [idle] = wait_for("idle finding", lambda: findings(status(daemon), "idle"))
            assert status(daemon)["passes"] - counted_from >= 3, "not before 3 passes"
            assert idle["entry"] == {"ip": "127.0.0.1", "port": idle_port, "protocol": "tcp"}
            assert idle["passes"] >= 3 and f"for {idle['passes']} passes in a row" in idle["message"]
            got = call(daemon, "GET", f"/network/ports/127.0.0.1/{idle_port}").json()
            assert got["in_use"] is True, "reported only: a stopped server keeps its port"
            assert findings(status(daemon), "squatter") == [], "ports in use are not squatted"
            line = f"repair: idle: 127.0.0.1:{idle_port}/tcp"
            wait_for("a few more passes", lambda: status(daemon)["passes"] >= counted_from + 6)
            assert daemon.tail().count(line) == 1, "logged once, not every pass"
            assert_stops_cleanly(daemon)
