"""One daemon per data folder, per firewall chain and per address, with real `lightd serve`
processes: a second one refuses to start with one line saying who holds what, and changes
nothing on its way out.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import HEADERS, write_test_config
from tests.e2e.daemon import ServedDaemon, free_port
from tests.netns import NetNs

pytestmark = pytest.mark.slow

LIGHTD = str(Path(sys.executable).with_name("lightd"))


def refused_start(config: Path, port: int, timeout: float = 30.0) -> tuple[int, list[str]]:
    """Run a `lightd serve` that must refuse to start: ``(exit code, stderr lines)``. Fails the
    test when it serves instead (answers ping on a port no other daemon holds) or runs on."""
    argv = [LIGHTD, "serve", "--config", str(config), "--port", str(port)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    probe = not port_taken(port)
    try:
        while process.poll() is None:
            if (probe and answers_ping(port)) or time.monotonic() > deadline:
                pytest.fail(f"the second lightd started and served on port {port} instead of refusing")
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate(timeout=15)
    return process.returncode, stderr.strip().splitlines()


def answers_ping(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/v1/public/ping", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def call(daemon: ServedDaemon, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, daemon.url + path, headers=HEADERS, timeout=30, **kwargs)


def started(config: Path) -> ServedDaemon:
    daemon = ServedDaemon(config)
    daemon.start()
    return daemon


@pytest.fixture
def daemons():
    """Every daemon a test starts, stopped at its end."""
    running: list[ServedDaemon] = []
    yield running
    for daemon in running:
        daemon.stop()


def test_a_second_daemon_on_the_same_data_folder_refuses_and_names_the_holder(tmp_path, daemons):
    first = started(write_test_config(tmp_path / "first"))
    daemons.append(first)
    assert call(first, "POST", "/network/ports", json={"ip": "0.0.0.0", "port": 20001}).status_code == 201
    data = tmp_path / "first" / "data"
    second_config = write_test_config(tmp_path / "second", storage={"base_path": str(data)})

    code, stderr = refused_start(second_config, free_port())

    assert code != 0
    assert stderr == [
        f"lightd: data folder {data} is in use by another lightd (pid {first.process.pid}); "
        "stop it first or give this one another storage.base_path"
    ]
    assert call(first, "GET", "/network/ports/0.0.0.0/20001").status_code == 200, "first still serves"

    # The kernel drops the lock however its holder dies: a restart after SIGKILL just works.
    first.kill()
    after_crash = started(second_config)
    daemons.append(after_crash)
    assert call(after_crash, "GET", "/network/ports/0.0.0.0/20001").json()["port"] == 20001


def test_a_daemon_that_cannot_listen_exits_before_it_creates_its_database(tmp_path, daemons):
    first = started(write_test_config(tmp_path / "first"))
    daemons.append(first)
    second_config = write_test_config(tmp_path / "second")

    code, stderr = refused_start(second_config, first.port)

    assert not (tmp_path / "second" / "data" / "lightd.sqlite3").exists(), "the pool was never loaded"
    assert code != 0
    assert stderr == [f"lightd: cannot listen on 127.0.0.1:{first.port}: address in use"]
    assert call(first, "GET", "/network/ports/0.0.0.0/25565").status_code == 200


def test_a_daemon_that_cannot_listen_leaves_the_firewall_as_it_was(tmp_path, ns: NetNs, daemons):
    first = started(write_test_config(tmp_path / "first"))
    daemons.append(first)
    second_config = write_test_config(
        tmp_path / "second", firewall={"enabled": True, "netns": ns.path, "chain": "LIGHTD"}
    )
    before = ns.save(4)

    code, stderr = refused_start(second_config, first.port)

    assert ns.save(4) == before, "no chain created, no rule written"
    assert not (tmp_path / "second" / "data" / "lightd.sqlite3").exists()
    assert code != 0
    assert stderr == [f"lightd: cannot listen on 127.0.0.1:{first.port}: address in use"]


def test_a_second_daemon_on_the_same_chain_in_one_namespace_refuses(tmp_path, ns: NetNs, daemons):
    firewall = {"enabled": True, "netns": ns.path}
    first = started(write_test_config(tmp_path / "first", firewall=firewall))
    daemons.append(first)
    assert call(first, "POST", "/network/ports", json={"ip": "0.0.0.0", "port": 20001}).status_code == 201
    rules = ns.rules("LIGHTD")
    assert len(rules) == 6
    second_config = write_test_config(tmp_path / "second", firewall=firewall)

    code, stderr = refused_start(second_config, free_port())

    assert code != 0
    inode = os.stat(ns.path).st_ino
    assert stderr == [
        f"lightd: firewall.chain 'LIGHTD' in network namespace net:[{inode}] ({ns.path}) is managed "
        f"by another lightd (pid {first.process.pid}); stop it first or give this one another "
        "firewall.chain"
    ]
    assert ns.rules("LIGHTD") == rules, "every rule of the first daemon is still there"
    assert not (tmp_path / "second" / "data" / "lightd.sqlite3").exists()

    first.kill()  # a crashed holder frees the chain too
    after_crash = started(second_config)
    daemons.append(after_crash)
    assert call(after_crash, "GET", "/network/firewall").json()["enabled"] is True


def test_daemons_on_different_chains_in_one_namespace_both_run(tmp_path, ns: NetNs, daemons):
    for name, chain, port in (("first", "LIGHTD", 20001), ("second", "LIGHTD2", 20002)):
        daemon = started(
            write_test_config(tmp_path / name, firewall={"enabled": True, "netns": ns.path, "chain": chain})
        )
        daemons.append(daemon)
        assert call(daemon, "POST", "/network/ports", json={"ip": "0.0.0.0", "port": port}).status_code == 201
    assert any("--dport 20001 " in rule for rule in ns.rules("LIGHTD"))
    assert any("--dport 20002 " in rule for rule in ns.rules("LIGHTD2"))
    assert not any("--dport 20002 " in rule for rule in ns.rules("LIGHTD"))
    assert [len(ns.rules("LIGHTD")), len(ns.rules("LIGHTD2"))] == [6, 6]
