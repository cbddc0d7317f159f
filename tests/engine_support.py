"""A real container engine for tests: the Podman service of scripts/engine-up.sh.

``engine_url`` (session) makes sure the service answers: it uses one that already runs, or runs
``scripts/engine-up.sh`` and, if this session started it, stops it again at the end with
``scripts/engine-down.sh`` (by its pid file only). Without podman, or when not root, the tests
that need it are skipped, except under ``CI=true`` where they fail instead.

``engine`` gives a :class:`DockerEngine` on that service and, afterwards, removes every container
whose name starts with the test's :func:`name_prefix`. Helpers pick free loopback ports (bind
port 0) and talk to listeners through host ports; all traffic goes to 127.0.0.1.

Use from a test module with ``from tests.engine_support import engine, engine_url  # noqa``
or ``pytest_plugins = ["tests.engine_support"]`` in the top conftest.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightd.adapters.engine import LABEL, DockerEngine
from tests.ports import quiet_port

__all__ = [
    "ENGINE_DIR",
    "IMAGE",
    "LISTENER",
    "ROOT",
    "connection_refused",
    "engine",
    "engine_url",
    "free_port",
    "is_free",
    "name_prefix",
    "read_from",
    "require_engine",
    "skip_or_fail",
    "unique_name",
]

ROOT = Path(__file__).resolve().parents[1]
ENGINE_DIR = Path(os.environ.get("LIGHTD_PODMAN_DIR", "/run/lightd-podman"))
IMAGE = os.environ.get("LIGHTD_TEST_IMAGE", "localhost/busybox:latest")
LISTENER = ["nc", "-ll", "-p", "8080", "-e", "echo", "hello"]  # busybox: persistent, says hello

_counter = itertools.count(1)


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it when ``CI=true``: CI must run the engine tests."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"engine tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _socket_answers(url: str) -> bool:
    with DockerEngine(url, ping_timeout=2.0) as probe:
        return probe.ping()


def require_engine() -> tuple[str, bool]:
    """Make sure the Podman service answers; return its URL and whether this call started it."""
    url = "unix://" + str(ENGINE_DIR / "podman.sock")
    if _socket_answers(url):
        return url, False
    if shutil.which("podman") is None:
        skip_or_fail("podman is not installed (apt-get install podman runc busybox-static)")
    if os.geteuid() != 0:
        skip_or_fail("the engine tests need root (rootful podman publishing host ports)")
    try:
        done = subprocess.run(
            ["sh", str(ROOT / "scripts" / "engine-up.sh")],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "LIGHTD_PODMAN_DIR": str(ENGINE_DIR)},
        )
    except subprocess.TimeoutExpired:
        skip_or_fail("scripts/engine-up.sh did not finish within 180s")
        raise AssertionError("unreachable") from None
    if done.returncode != 0:
        skip_or_fail(f"scripts/engine-up.sh failed: {done.stderr.strip()[-2000:]}")
    url = done.stdout.strip().splitlines()[-1]
    if not _socket_answers(url):
        skip_or_fail(f"scripts/engine-up.sh ran but {url} does not answer")
    return url, True


@pytest.fixture(scope="session")
def engine_url() -> Iterator[str]:
    url, started = require_engine()
    yield url
    if started:
        subprocess.run(
            ["sh", str(ROOT / "scripts" / "engine-down.sh")],
            capture_output=True,
            timeout=60,
            env={**os.environ, "LIGHTD_PODMAN_DIR": str(ENGINE_DIR)},
            check=False,
        )


def name_prefix(request: pytest.FixtureRequest) -> str:
    """A container-name prefix unique to this test run and test."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")
    return f"lt{os.getpid()}-{base}"


def unique_name(request: pytest.FixtureRequest, tag: str = "c") -> str:
    return f"{name_prefix(request)}-{tag}{next(_counter)}"


@pytest.fixture
def engine(engine_url: str, request: pytest.FixtureRequest) -> Iterator[DockerEngine]:
    """A DockerEngine on the test service; removes this test's containers afterwards."""
    eng = DockerEngine(engine_url)
    try:
        yield eng
    finally:
        prefix = name_prefix(request)
        try:
            api = eng._client()
            for row in api.containers(all=True):
                names = [str(n).lstrip("/") for n in row.get("Names") or ()]
                labels = row.get("Labels") or {}
                if any(n.startswith(prefix) for n in names) or str(
                    labels.get(LABEL, "")
                ).startswith(prefix):
                    eng.remove(str(row["Id"]), force=True)
        finally:
            eng.close()


def free_port(protocol: str = "tcp", ip: str = "127.0.0.1") -> int:
    """A port nothing holds right now, outside the range outgoing connections take from."""
    return quiet_port(protocol, ip)


def is_free(port: int, protocol: str = "tcp", ip: str = "127.0.0.1") -> bool:
    """Whether a server could bind (and, for TCP, listen on) the port now."""
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        if protocol == "tcp":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
            if protocol == "tcp":
                s.listen(1)
        except OSError:
            return False
        return True


def read_from(port: int, ip: str = "127.0.0.1", timeout: float = 10.0) -> bytes:
    """Connect to ``ip:port`` and return the first bytes the listener sends.

    Retries until ``timeout``: a fresh container needs a moment before its listener is up.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, port), timeout=2.0) as s:
                data = s.recv(1024)
                if data:
                    return data
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"nothing answered on {ip}:{port} within {timeout}s (last: {last})")


def connection_refused(port: int, ip: str = "127.0.0.1", timeout: float = 5.0) -> bool:
    """Whether connecting to ``ip:port`` is refused (waits up to ``timeout`` for it to be)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((ip, port), timeout=1.0):
                pass
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
