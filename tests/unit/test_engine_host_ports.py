"""The pre-start check of host ports, with a host table of the test's own.

:class:`DockerEngine` is driven over a real unix socket, through the real SDK, against a small
stand-in for the Docker Engine API that records every request and answers as an engine does (no
container runs, no port is bound). The host table is a fake that says which ports are busy at
each look, so the tests can prove *when* the engine looks: before anything is created, and again
right before the start (the Podman 4.3 leak workaround of ``lightd.adapters.engine.docker_api``).
"""

from __future__ import annotations

import json
import logging
import socketserver
import tempfile
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from lightd.adapters.engine import DockerEngine, check_host_ports
from lightd.core.containers import Binding
from lightd.errors import NotFound, Unavailable

Key = tuple[str, int, str]
GAME = Binding("0.0.0.0", 25565, "tcp", 25565)
VOICE = Binding("0.0.0.0", 19132, "udp", 19132)


# -- a host table of the test's own --------------------------------------------------------------


class Table:
    def __init__(self, busy: set[Key]) -> None:
        self.busy = busy

    def is_bound(self, ip: str, port: int, protocol: str) -> bool:
        return (ip, port, protocol) in self.busy


class FakeHost:
    """Says ``looks[i]`` is busy at the i-th look (the last one from then on); or cannot read."""

    def __init__(self, *looks: set[Key], error: OSError | None = None) -> None:
        self.looks = list(looks) or [set()]
        self.error = error
        self.asked: list[tuple[list[str], tuple[int, int] | None]] = []

    def snapshot(
        self, protocols: Sequence[str], *, ports: tuple[int, int] | None, ignore_time_wait: bool
    ) -> Table:
        assert ignore_time_wait  # the engine's port holders bind with SO_REUSEADDR
        self.asked.append((list(protocols), ports))
        if self.error is not None:
            raise self.error
        return Table(self.looks[min(len(self.asked), len(self.looks)) - 1])


# -- a stand-in for the engine's API -------------------------------------------------------------


class StubEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Keeps containers in a dict and every request, ``"POST /containers/create"``, in a list."""

    daemon_threads = True

    def __init__(self, path: str) -> None:
        self.containers: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        self.lock = threading.Lock()
        super().__init__(path, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    server: StubEngine

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a unix socket's peer has no address to log

    def _answer(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Api-Version", "1.41")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> None:
        path, _, _query = self.path.partition("?")
        path = path.removeprefix("/v1.41")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null")
        stub = self.server
        if path == "/_ping":  # lightd's own probe, HTTP/1.0
            data = b"OK"
            self.send_response(200)
            self.send_header("Api-Version", "1.41")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        with stub.lock:
            stub.requests.append(f"{method} {_generic(path)}")
            parts = path.strip("/").split("/")
            if method == "POST" and path == "/containers/create":
                engine_id = f"c{len(stub.containers) + 1:062d}"
                stub.containers[engine_id] = {
                    "Id": engine_id,
                    "Name": "/" + _query.partition("name=")[2],
                    "Config": {"Image": body["Image"], "Labels": body["Labels"]},
                    "HostConfig": body["HostConfig"],
                    "State": {"Status": "created", "Running": False, "ExitCode": 0},
                }
                return self._answer(201, {"Id": engine_id, "Warnings": []})
            container = stub.containers.get(parts[1]) if len(parts) > 1 else None
            if container is None:
                return self._answer(404, {"message": f"no such container: {parts[-1]}"})
            if method == "GET" and parts[2:] == ["json"]:
                return self._answer(200, container)
            if method == "POST" and parts[2:] == ["start"]:
                container["State"] = {"Status": "running", "Running": True, "ExitCode": 0}
                return self._answer(204)
            if method == "DELETE" and len(parts) == 2:
                del stub.containers[parts[1]]
                return self._answer(204)
        self._answer(500, {"message": f"the stub does not know {method} {path}"})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")


def _generic(path: str) -> str:
    parts = path.strip("/").split("/")
    if len(parts) > 1 and parts[0] == "containers" and parts[1] != "create":
        parts[1] = "{id}"
    return "/" + "/".join(parts)


@pytest.fixture
def stub() -> Iterator[StubEngine]:
    with tempfile.TemporaryDirectory(prefix="lightd-stub-") as folder:  # short: a socket path
        server = StubEngine(str(Path(folder) / "engine.sock"))
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            yield server
        finally:
            server.shutdown()
            thread.join()
            server.server_close()


def engine_on(stub: StubEngine, host: FakeHost, **options: Any) -> DockerEngine:
    return DockerEngine(f"unix://{stub.server_address}", host=host, **options)


CREATE, START, REMOVE = "POST /containers/create", "POST /containers/{id}/start", "DELETE /containers/{id}"
INSPECT = "GET /containers/{id}/json"


# -- tests ---------------------------------------------------------------------------------------


def test_a_busy_port_refuses_before_anything_is_created(stub: StubEngine) -> None:
    host = FakeHost({GAME.key})
    with engine_on(stub, host) as engine, pytest.raises(Unavailable) as caught:
        engine.create("mc-1", "busybox", None, {}, [VOICE, GAME])
    assert caught.value.details["reason"] == "port_in_use"
    assert caught.value.details["ports"] == [{"ip": "0.0.0.0", "port": 25565, "protocol": "tcp"}]
    assert "0.0.0.0:25565/tcp" in caught.value.message
    assert stub.requests == [] and stub.containers == {}
    # One look, at both protocols and only the bindings' range of ports.
    assert host.asked == [(["tcp", "udp"], (19132, 25565))]


def test_a_port_taken_between_create_and_start_refuses_and_removes_what_was_made(
    stub: StubEngine,
) -> None:
    host = FakeHost(set(), {GAME.key})  # free at the first look, busy at the second
    with engine_on(stub, host) as engine, pytest.raises(Unavailable) as caught:
        engine.create("mc-1", "busybox", None, {}, [GAME])
    assert caught.value.details["reason"] == "port_in_use"
    assert stub.requests == [CREATE, REMOVE]  # never started: Podman would leak the free ones
    assert stub.containers == {} and len(host.asked) == 2


def test_start_of_a_created_container_looks_again_and_leaves_it_created(stub: StubEngine) -> None:
    host = FakeHost({GAME.key}, set())
    with engine_on(stub, host) as engine:
        engine_id = engine.create("mc-1", "busybox", None, {}, [GAME], start=False)
        assert host.asked == []  # nothing starts, nothing to look at
        with pytest.raises(Unavailable) as caught:
            engine.start(engine_id)
        assert caught.value.details["reason"] == "port_in_use"
        assert engine.inspect(engine_id)["state"] == "created"
        engine.start(engine_id)  # the port is free again
        assert engine.inspect(engine_id)["running"]
    assert stub.requests == [CREATE, INSPECT, INSPECT, INSPECT, START, INSPECT]
    assert host.asked == [(["tcp"], (25565, 25565))] * 2


def test_free_ports_start_after_two_looks(stub: StubEngine) -> None:
    host = FakeHost({("127.0.0.1", 25565, "tcp")})  # another ip's port is no business of this one
    with engine_on(stub, host) as engine:
        engine_id = engine.create("mc-1", "busybox", None, {}, [GAME])
        assert engine.inspect(engine_id)["running"]
    assert stub.requests == [CREATE, START, INSPECT] and len(host.asked) == 2


def test_an_unreadable_host_table_does_not_block(stub: StubEngine, caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost(error=PermissionError(13, "Permission denied"))
    with caplog.at_level(logging.WARNING), engine_on(stub, host) as engine:
        engine_id = engine.create("mc-1", "busybox", None, {}, [GAME])
        assert engine.inspect(engine_id)["running"]
    assert stub.requests == [CREATE, START, INSPECT] and len(host.asked) == 2
    assert "cannot read this host's socket tables" in caplog.text


def test_without_the_check_the_host_is_never_read(stub: StubEngine) -> None:
    host = FakeHost({GAME.key})
    with engine_on(stub, host, check_ports=False) as engine:
        engine.create("mc-1", "busybox", None, {}, [GAME])
    assert host.asked == [] and stub.requests == [CREATE, START]
    # An engine over TCP publishes on another host: its ports are not this host's to check.
    assert not DockerEngine("tcp://192.0.2.1:2375", host=host).check_ports


def test_an_unreachable_engine_says_so_before_a_busy_port_does(tmp_path: Path) -> None:
    host = FakeHost({GAME.key})
    engine = DockerEngine(f"unix://{tmp_path / 'nothing.sock'}", host=host)
    with pytest.raises(Unavailable) as caught:
        engine.create("mc-1", "busybox", None, {}, [GAME])
    assert caught.value.details["reason"] == "unreachable" and host.asked == []


def test_start_of_a_missing_container_is_not_found(stub: StubEngine) -> None:
    with engine_on(stub, FakeHost()) as engine, pytest.raises(NotFound) as caught:
        engine.start("nothing")
    assert caught.value.details == {"reason": "container_not_found", "container": "nothing"}


def test_check_host_ports_reports_only_the_busy_ones() -> None:
    host = FakeHost({VOICE.key})
    assert check_host_ports([GAME, VOICE], host) == [VOICE]
    assert check_host_ports([], host) == [] and len(host.asked) == 1  # nothing to look at
    assert check_host_ports([GAME], FakeHost(error=OSError("netlink refused"))) == []
