"""Shared fixtures: a config in a temporary folder, and the real app over a real SQLite file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lightd.api import create_app
from lightd.bootstrap import build
from lightd.config import load_or_create, write_config
from tests.netns import NetNs, private_netns

# The engine fixtures (engine, engine_url, engine_target, podman_target, docker_target) for every
# test: engine and engine_url depend on the others, which a test module does not import itself.
pytest_plugins = ["tests.engine_support"]

TOKEN = "lightd_" + "0123456789abcdef" * 2
VENDOR = "Application/vnd.pkglatv1+json"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Accept": VENDOR}


def write_test_config(folder: Path, **sections: dict[str, Any]) -> Path:
    """A config that never touches the host: firewall off, no reserved ports, no container engine."""
    raw: dict[str, Any] = {
        "api": {"host": "127.0.0.1", "port": 0},
        "authorization": {"token": TOKEN},
        "storage": {"base_path": str(folder / "data")},
        "firewall": {"enabled": False},
        "runtime": {"kind": "none"},
        # The kernel's reserved ports are the network namespace's: a test turns it on only for
        # a daemon inside a namespace of its own (tests/e2e/test_reserved_ports_daemon.py).
        "pool": {"reserve_ports": False},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    path = folder / "config.json"
    write_config(path, raw)
    return path


HOST_RESERVED_PORTS = "/proc/sys/net/ipv4/ip_local_reserved_ports"


def _host_reserved_ports() -> str | None:
    try:
        with open(HOST_RESERVED_PORTS) as listed:
            return listed.read()
    except OSError:
        return None


@pytest.fixture(autouse=True)
def host_reserved_ports_untouched() -> Iterator[None]:
    """No test may change the host's own net.ipv4.ip_local_reserved_ports: a root lightd keeps
    its pool there unless pool.reserve_ports is false (write_test_config turns it off)."""
    before = _host_reserved_ports()
    yield
    after = _host_reserved_ports()
    if after != before:
        pytest.fail(f"the test changed the host's {HOST_RESERVED_PORTS} from {before!r} to "
                    f"{after!r}: give its daemon pool.reserve_ports false, or a namespace of its own")


@pytest.fixture
def ns() -> Iterator[NetNs]:
    """A private network namespace (skipped, or failed with CI=true, where none can be made)."""
    yield from private_netns()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_test_config(tmp_path)


@pytest.fixture
async def daemon(config_file: Path):
    lightd = build(load_or_create(config_file))
    yield lightd


@pytest.fixture
async def client(daemon):
    """The real app, on a real SQLite file, in-process."""
    app = create_app(daemon)
    await daemon.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://lightd", headers=HEADERS
        ) as http:
            yield http
    finally:
        await daemon.stop()


def db_rows(daemon) -> list[tuple]:
    """What the database file holds, read through a separate connection."""
    import sqlite3

    with sqlite3.connect(daemon.store.path) as db:
        return sorted(db.execute("SELECT ip, port, protocol, in_use, container FROM ports"))


def json_of(response: httpx.Response) -> Any:
    return json.loads(response.content)


def running_as_root() -> bool:
    return os.geteuid() == 0
