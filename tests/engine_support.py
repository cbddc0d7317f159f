"""Real container engines for tests: Podman's Docker API and Docker Engine itself.

Two engines, one test image (scripts/test-image: busybox-static and a static ``udp-echo``):

- ``podman``: the Podman service of scripts/engine-up.sh, in the host's network namespace.
- ``docker``: dockerd of scripts/docker-up.sh, inside its own network namespace
  (/run/netns/lightd-docker). Its published ports exist only in there.

Fixtures (tests/conftest.py loads this module as a plugin, so every test can ask for them):

- ``podman_target`` / ``docker_target`` (session): bring that engine up, or reuse one that
  runs, and give an :class:`EngineTarget`. The up script runs every session (it is idempotent
  and also rebuilds a stale test image); an engine this session started is stopped at its end.
  Without the engine's tools, or when not root, the tests that need it are skipped, except
  under ``CI=true`` where they fail instead.
- ``engine_target`` (function, parametrised: test ids ``[podman]`` and ``[docker]``): the
  target, with the test running inside the engine's network namespace for its whole duration
  (setns(2) on the main thread, see :func:`tests.netns.entered`); back in the host's namespace
  at teardown, also when the test fails. Processes and sockets the test or its fixtures make
  meanwhile (a ``lightd serve``, curl, the port checks) see the engine's published ports.
- ``engine_url`` (function): ``engine_target.url``; every test using it runs on both engines.
- ``engine`` (function): a :class:`DockerEngine` on ``engine_target``.

After each test ``engine_target`` removes, on that same engine, every container whose name (or
lightd label) starts with the test's :func:`name_prefix` (what :func:`unique_name` gives).

A fixture that starts something meant to reach the engine's ports (a daemon, a socket) must
depend on ``engine_url``/``engine``/``engine_target``, so it is made after the namespace is
entered and torn down before it is left. Outside pytest (benches), :func:`require_podman` and
:func:`require_docker` bring an engine up and :func:`inside` enters its namespace.

Helpers pick ports outside ip_local_port_range (tests/ports.py) and talk to listeners through
published ports: :func:`read_from` (tcp), :func:`udp_round_trip` (udp, through ``UDP_ECHO``).
All traffic goes to loopback addresses of the namespace the test runs in.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from lightd.adapters.engine import LABEL, DockerEngine
from tests.netns import entered
from tests.ports import quiet_port

__all__ = [
    "DOCKER_DIR",
    "ENGINE_DIR",
    "ENGINE_KINDS",
    "IMAGE",
    "LISTENER",
    "LISTENER_TCP_UDP",
    "PODMAN_DIR",
    "ROOT",
    "UDP_ECHO",
    "EngineTarget",
    "connection_refused",
    "docker_target",
    "engine",
    "engine_target",
    "engine_url",
    "free_port",
    "inside",
    "is_free",
    "name_prefix",
    "podman_target",
    "read_from",
    "require_docker",
    "require_engine",
    "require_podman",
    "skip_or_fail",
    "udp_round_trip",
    "udp_silent",
    "unique_name",
]

ROOT = Path(__file__).resolve().parents[1]
PODMAN_DIR = Path(os.environ.get("LIGHTD_PODMAN_DIR", "/run/lightd-podman"))
ENGINE_DIR = PODMAN_DIR  # the older name, from when Podman was the only engine
DOCKER_DIR = Path(os.environ.get("LIGHTD_DOCKER_DIR", "/run/lightd-docker"))
IMAGE = os.environ.get("LIGHTD_TEST_IMAGE", "localhost/busybox:latest")
ENGINE_KINDS = ("podman", "docker")

# Commands for the test image; each listens on container port 8080.
LISTENER = ["nc", "-ll", "-p", "8080", "-e", "echo", "hello"]  # busybox: persistent, says hello
UDP_ECHO = ["udp-echo", "8080"]  # answers every datagram with the same bytes
# Both at once, for a container published on tcp and udp. udp-echo is PID 1: it ends on SIGTERM
# (a PID 1 without a handler ignores it), so stopping the container does not wait for a kill.
LISTENER_TCP_UDP = ["sh", "-c", "nc -ll -p 8080 -e echo hello & exec udp-echo 8080"]

_counter = itertools.count(1)


@dataclass(frozen=True)
class EngineTarget:
    """One engine for the tests to drive."""

    kind: str  # "podman" or "docker"
    url: str  # its Docker API socket, unix:///...
    netns: str | None  # the path of its network namespace; None: the host's (Podman)


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it when ``CI=true``: CI must run the engine tests."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"engine tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _socket_answers(url: str) -> bool:
    with DockerEngine(url, ping_timeout=2.0) as probe:
        return probe.ping()


def _run_script(name: str) -> list[str]:
    """Run scripts/<name> and return its stdout lines; skip (fail in CI) when it fails."""
    try:
        done = subprocess.run(
            ["sh", str(ROOT / "scripts" / name)],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "LIGHTD_PODMAN_DIR": str(PODMAN_DIR), "LIGHTD_DOCKER_DIR": str(DOCKER_DIR)},
        )
    except subprocess.TimeoutExpired:
        skip_or_fail(f"scripts/{name} did not finish within 300s")
        raise AssertionError("unreachable") from None
    if done.returncode != 0:
        skip_or_fail(f"scripts/{name} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip().splitlines()


def _bring_up(kind: str, tool: str, package: str) -> tuple[list[str], bool]:
    """Run the engine's up script; return its output lines and whether this call started it."""
    if shutil.which(tool) is None:
        skip_or_fail(f"{tool} is not installed (apt-get install {package})")
    if os.geteuid() != 0:
        skip_or_fail(f"the {kind} engine tests need root (a rootful engine publishing host ports)")
    socket_path = PODMAN_DIR / "podman.sock" if kind == "podman" else DOCKER_DIR / "docker.sock"
    was_up = _socket_answers("unix://" + str(socket_path))
    lines = _run_script("engine-up.sh" if kind == "podman" else "docker-up.sh")
    return lines, not was_up


def require_podman() -> tuple[EngineTarget, bool]:
    """Make sure the Podman service answers; return it and whether this call started it."""
    lines, started = _bring_up("podman", "podman", "podman runc busybox-static gcc libc6-dev")
    url = lines[-1] if lines else ""
    if not url or not _socket_answers(url):
        skip_or_fail(f"scripts/engine-up.sh ran but {url or 'no socket'} does not answer")
    return EngineTarget("podman", url, None), started


def require_docker() -> tuple[EngineTarget, bool]:
    """Make sure Docker Engine answers in its namespace; return it and whether this call started it."""
    lines, started = _bring_up("docker", "dockerd", "docker.io iproute2 busybox-static gcc libc6-dev")
    if len(lines) < 2:
        skip_or_fail(f"scripts/docker-up.sh printed {lines!r}, not a socket URL and a namespace path")
    url, netns = lines[-2], lines[-1]
    if not _socket_answers(url):
        skip_or_fail(f"scripts/docker-up.sh ran but {url} does not answer")
    if not os.path.exists(netns):
        skip_or_fail(f"scripts/docker-up.sh ran but its namespace {netns} does not exist")
    return EngineTarget("docker", url, netns), started


def require_engine() -> tuple[str, bool]:
    """Podman's socket URL and whether this call started it (the benches' older entry point)."""
    target, started = require_podman()
    return target.url, started


def _bring_down(script: str) -> None:
    subprocess.run(
        ["sh", str(ROOT / "scripts" / script)],
        capture_output=True,
        timeout=120,
        env={**os.environ, "LIGHTD_PODMAN_DIR": str(PODMAN_DIR), "LIGHTD_DOCKER_DIR": str(DOCKER_DIR)},
        check=False,
    )


@pytest.fixture(scope="session")
def podman_target() -> Iterator[EngineTarget]:
    target, started = require_podman()
    yield target
    if started:
        _bring_down("engine-down.sh")


@pytest.fixture(scope="session")
def docker_target() -> Iterator[EngineTarget]:
    target, started = require_docker()
    yield target
    if started:
        _bring_down("docker-down.sh")


@contextlib.contextmanager
def inside(target: EngineTarget) -> Iterator[EngineTarget]:
    """Run the calling (main) thread where ``target``'s published ports are, until the block ends."""
    if target.netns is None:
        yield target
        return
    with entered(target.netns):
        yield target


@pytest.fixture(params=ENGINE_KINDS)
def engine_target(request: pytest.FixtureRequest) -> Iterator[EngineTarget]:
    """Each engine in turn, with the test inside that engine's network namespace.

    Afterwards the test's containers (see :func:`name_prefix`) are removed from that engine,
    whichever fixture or daemon made them.
    """
    target: EngineTarget = request.getfixturevalue(f"{request.param}_target")
    try:
        with inside(target):
            yield target
    finally:
        _remove_containers(target.url, name_prefix(request))


@pytest.fixture
def engine_url(engine_target: EngineTarget) -> str:
    return engine_target.url


def name_prefix(request: pytest.FixtureRequest) -> str:
    """A container-name prefix unique to this test run and test."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")
    return f"lt{os.getpid()}-{base}"


def unique_name(request: pytest.FixtureRequest, tag: str = "c") -> str:
    return f"{name_prefix(request)}-{tag}{next(_counter)}"


@pytest.fixture
def engine(engine_target: EngineTarget) -> Iterator[DockerEngine]:
    """A DockerEngine on the test's engine (``engine_target`` removes the test's containers)."""
    eng = DockerEngine(engine_target.url)
    try:
        yield eng
    finally:
        eng.close()


def _remove_containers(url: str, prefix: str) -> None:
    """Remove, by id, every container whose name or lightd label starts with ``prefix``.

    Straight through the Docker API, not the adapter under test: cleanup must work even when
    the adapter does not.
    """
    api = docker.APIClient(base_url=url, version="1.41", timeout=120)
    try:
        for row in api.containers(all=True):
            names = [str(n).lstrip("/") for n in row.get("Names") or ()]
            label = str((row.get("Labels") or {}).get(LABEL, ""))
            if any(n.startswith(prefix) for n in names) or label.startswith(prefix):
                with contextlib.suppress(docker.errors.NotFound):
                    api.remove_container(str(row["Id"]), force=True, v=True)
    finally:
        api.close()


def free_port(protocol: str = "tcp", ip: str = "127.0.0.1") -> int:
    """A port nothing holds right now, outside the range outgoing connections take from."""
    return quiet_port(protocol, ip)


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def is_free(port: int, protocol: str = "tcp", ip: str = "127.0.0.1") -> bool:
    """Whether a server could bind (and, for TCP, listen on) the port now."""
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(_family(ip), kind) as s:
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


def udp_round_trip(
    port: int, ip: str = "127.0.0.1", payload: bytes | None = None, timeout: float = 10.0
) -> bytes:
    """Send a datagram to ``ip:port`` until one comes back; return what came back.

    ``payload`` defaults to bytes unique to the call, so an answer meant for another test cannot
    pass. Retries until ``timeout``: a fresh container needs a moment before its echo is up, and
    a datagram sent before that is lost (or refused). The socket is connected, so it takes
    answers from ``ip:port`` only. Compare the answer with what you sent (udp-echo returns it).
    """
    data = payload if payload is not None else f"lightd {port} {time.monotonic_ns()}".encode()
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        with socket.socket(_family(ip), socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            try:
                s.connect((ip, port))
                s.send(data)
                return s.recv(65535)
            except OSError as exc:  # timeout, or ICMP port unreachable (ConnectionRefusedError)
                last = exc
        time.sleep(0.1)
    raise AssertionError(f"no UDP answer from {ip}:{port} within {timeout}s (last: {last!r})")


def udp_silent(port: int, ip: str = "127.0.0.1", wait: float = 2.0) -> bool:
    """Whether datagrams to ``ip:port`` get no answer for ``wait`` seconds (refused or lost)."""
    deadline = time.monotonic() + wait
    with socket.socket(_family(ip), socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.connect((ip, port))
        while time.monotonic() < deadline:
            try:
                s.send(b"anyone there?")
                if s.recv(65535):
                    return False
            except OSError:
                pass
    return True


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
