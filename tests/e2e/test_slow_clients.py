"""Slow clients against a real `lightd serve` with the common limit of 1,024 open files: more
connections than that which never finish their heads, and bodies that never end, do not take
the daemon down; each is closed once its time is up.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import HEADERS, write_test_config
from tests.e2e.daemon import ServedDaemon

pytestmark = pytest.mark.slow

SLOW_HEADS = 1100  # more than the daemon's 1,024 descriptors
SLOW_BODIES = 20
HEADER_TIMEOUT = 5
BODY_TIMEOUT = 5
WAIT = 45.0  # how long the test waits for what must happen (not a timing assertion)
# Exec lightd with RLIMIT_NOFILE set to (soft, hard), as a service manager would.
WITH_OPEN_FILES = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2]))); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


def with_open_files(soft: int, hard: int) -> list[str]:
    return [sys.executable, "-c", WITH_OPEN_FILES, str(soft), str(hard)]


@pytest.fixture
def many_sockets() -> Iterator[None]:
    """Room in this process for the test's own ~1,200 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = SLOW_HEADS + SLOW_BODIES + 200
    if hard != resource.RLIM_INFINITY and hard < need:
        reason = f"the hard open files limit ({hard}) is below the {need} sockets this test opens"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but: {reason}")
        pytest.skip(reason)
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def config(tmp_path: Path) -> Path:
    return write_test_config(tmp_path, api={"header_timeout": HEADER_TIMEOUT, "body_timeout": BODY_TIMEOUT})


def open_slow_heads(port: int, count: int) -> list[socket.socket]:
    opened = []
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(10)
        opened.append(sock)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /api/v1/public/ping HTTP/1.1\r\nHost: lightd\r\nX-Slow: ")
        except OSError:
            pass  # refused at once: what the limit does; checked below with the rest
    return opened


def open_slow_bodies(port: int, count: int) -> list[socket.socket]:
    head = (
        "POST /network/ports HTTP/1.1\r\nHost: lightd\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in HEADERS.items())
        + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    opened = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(head + b"1\r\n{\r\n")
        opened.append(sock)
    return opened


class Trickle(threading.Thread):
    """Sends one more chunk on every body every 0.2 s until the daemon closes it."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        super().__init__(daemon=True)
        self.open = list(sockets)
        self.cut: list[socket.socket] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while self.open and not self.stop.wait(0.2):
            for sock in list(self.open):
                try:
                    sock.sendall(b"1\r\n \r\n")
                except TimeoutError:
                    continue  # the daemon is not reading yet: not closed
                except OSError:
                    self.open.remove(sock)
                    self.cut.append(sock)


def closed_by_daemon(sock: socket.socket, deadline: float) -> tuple[bool, bytes]:
    """Whether the daemon closed ``sock`` before ``deadline``, and what it sent first."""
    received = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(4096)
        except TimeoutError:
            return False, received
        except OSError:
            return True, received
        if not data:
            return True, received
        received += data


def ping(url: str) -> bool:
    try:
        return httpx.get(url + "/api/v1/public/ping", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_more_slow_clients_than_descriptors_do_not_take_the_daemon_down(tmp_path, many_sockets):
    daemon = ServedDaemon(config(tmp_path), prefix=with_open_files(1024, 1024))
    daemon.start()
    bodies: list[socket.socket] = []
    heads: list[socket.socket] = []
    try:
        bodies = open_slow_bodies(daemon.port, SLOW_BODIES)
        trickle = Trickle(bodies)
        trickle.start()
        heads = open_slow_heads(daemon.port, SLOW_HEADS)

        deadline = time.monotonic() + WAIT
        probes = answered = 0
        while time.monotonic() < deadline and answered < 3:
            probes += 1
            answered += ping(daemon.url)
            time.sleep(0.1)
        assert answered == 3, f"ping answered {answered} of {probes} probes in {WAIT:.0f} s"
        listed = httpx.get(daemon.url + "/network/ports", headers=HEADERS, timeout=10)
        assert listed.status_code == 200, "the store still has the descriptors it needs"

        outcomes = [closed_by_daemon(sock, deadline) for sock in heads]
        assert all(closed for closed, _ in outcomes), (
            f"{sum(not closed for closed, _ in outcomes)} of {SLOW_HEADS} unfinished heads still open"
        )
        refused = sum(sent.startswith(b"HTTP/1.1 503 ") for _, sent in outcomes)
        assert refused > 0, "connections over api.max_connections are answered 503 and closed"
        assert all(sent == b"" or sent.startswith(b"HTTP/1.1 503 ") for _, sent in outcomes)

        trickle.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not trickle.open, f"{len(trickle.open)} of {SLOW_BODIES} endless bodies still open"
        assert daemon.process is not None and daemon.process.poll() is None
        assert ping(daemon.url)
    finally:
        for sock in [*bodies, *heads]:
            sock.close()
        daemon.stop()


def test_the_daemon_raises_its_open_files_limit_to_the_hard_one(tmp_path):
    daemon = ServedDaemon(config(tmp_path), prefix=with_open_files(1024, 4096))
    daemon.start()
    try:
        assert daemon.process is not None
        with open(f"/proc/{daemon.process.pid}/limits") as limits:
            row = next(line for line in limits if line.startswith("Max open files"))
        assert row.split()[3:5] == ["4096", "4096"]
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    ("key", "value"),
    [("header_timeout", 0), ("body_timeout", "30"), ("max_connections", -1), ("max_connections", 2.5)],
)
def test_a_bad_bound_stops_the_start_with_one_line_naming_it(tmp_path, key, value):
    path = write_test_config(tmp_path, api={key: value})
    lightd = Path(sys.executable).with_name("lightd")
    try:
        done = subprocess.run(
            [str(lightd), "serve", "--config", str(path)], capture_output=True, text=True, timeout=15
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"lightd started with api.{key} = {value!r} instead of refusing")
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"lightd: {path}: api.{key} must be ")
    assert not (tmp_path / "data").exists(), "nothing was created"
