"""The engine adapter against the two real engines: Podman's Docker API and Docker Engine.

Each test taking ``engine``/``engine_url`` runs on both (ids ``[podman]`` and ``[docker]``, see
tests/engine_support.py); a Docker Engine test runs inside that engine's network namespace.
Every container listens inside on 8080 and is published on a free port, mostly of 127.0.0.1;
the tests reach it through that host port. The NoEngine and unreachable-socket tests need no
engine.
"""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest

from lightd.adapters.engine import (
    LABEL,
    Binding,
    DockerEngine,
    NoEngine,
    check_host_ports,
    detect,
    socket_url,
)
from lightd.errors import Conflict, InvalidInput, NotFound, Unavailable
from tests.engine_support import (
    IMAGE,
    LISTENER,
    LISTENER_TCP_UDP,
    EngineTarget,
    connection_refused,
    engine,  # noqa: F401  (fixture)
    engine_url,  # noqa: F401  (fixture)
    free_port,
    inside,
    is_free,
    read_from,
    udp_round_trip,
    udp_silent,
    unique_name,
)
from tests.netns import net_namespace

HOST_NS = net_namespace()  # collection runs in the host's namespace

needs_engine = pytest.mark.slow


def bind(port: int, container_port: int = 8080, protocol: str = "tcp") -> Binding:
    return Binding("127.0.0.1", port, protocol, container_port)


def blocker(port: int = 0, listen: bool = True) -> socket.socket:
    """A plain socket of this test holding 127.0.0.1:port (0: a fresh one)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", port))
    if listen:
        s.listen(1)
    return s


# -- real engine ---------------------------------------------------------------------------------


@needs_engine
def test_detect_picks_the_engine_when_it_answers(engine_url: str) -> None:  # noqa: F811
    chosen, reason = detect("auto", engine_url)
    try:
        assert isinstance(chosen, DockerEngine)
        assert chosen.ping()
        assert "answers" in reason and engine_url in reason
        assert chosen.version()
    finally:
        chosen.close()
    path = engine_url.removeprefix("unix://")
    chosen, reason = detect("docker", path)  # a bare socket path as in config.json
    try:
        assert isinstance(chosen, DockerEngine) and chosen.base_url == engine_url
    finally:
        chosen.close()


@needs_engine
def test_create_reach_inspect_list_remove(
    engine: DockerEngine,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    port = free_port()
    name = unique_name(request)
    started = time.monotonic()
    engine_id = engine.create(name, IMAGE, LISTENER, {"GREETING": "hi"}, [bind(port)])
    took = time.monotonic() - started
    assert took < 30

    # The listener inside answers through the host port.
    assert read_from(port) == b"hello\n"

    info = engine.inspect(engine_id)
    assert info["id"] == engine_id
    assert info["name"] == name
    assert info["internal_id"] == name
    assert info["state"] == "running" and info["running"]
    assert info["bindings"] == [Binding("127.0.0.1", port, "tcp", 8080)]
    assert engine.inspect(name)["id"] == engine_id

    managed = {i["internal_id"]: i for i in engine.list_managed()}
    assert managed[name]["id"] == engine_id
    assert managed[name]["bindings"] == [bind(port)]

    engine.remove(engine_id)
    assert engine.inspect(engine_id)["state"] == "missing"
    assert name not in {i["internal_id"] for i in engine.list_managed()}
    assert connection_refused(port)
    assert is_free(port)
    engine.remove(engine_id)  # a missing container is not an error


@needs_engine
def test_bindings_read_back_tcp_udp_and_several_ports(
    engine: DockerEngine,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    a, b, u = free_port(), free_port(), free_port("udp")
    wanted = [bind(a, 8080), bind(b, 9090), bind(u, 8080, "udp")]
    engine_id = engine.create(unique_name(request), IMAGE, "sleep 600", {}, wanted, start=False)
    info = engine.inspect(engine_id)
    assert info["state"] == "created" and not info["running"]
    assert info["bindings"] == sorted(wanted)
    engine.start(engine_id)
    info = engine.inspect(engine_id)
    assert info["running"] and info["bindings"] == sorted(wanted)
    # While it runs, the engine holds its host ports.
    assert not is_free(a) and not is_free(b) and not is_free(u, "udp")
    assert check_host_ports(wanted) == wanted


@needs_engine
def test_create_on_a_port_bound_by_another_socket_fails_and_leaves_nothing(
    engine: DockerEngine,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    for listen in (False, True):
        with blocker(listen=listen) as held:
            port = held.getsockname()[1]
            name = unique_name(request)
            with pytest.raises(Unavailable) as caught:
                engine.create(name, IMAGE, LISTENER, {}, [bind(port)])
            assert caught.value.details["reason"] == "port_in_use"
            assert f"127.0.0.1:{port}/tcp" in caught.value.message
            assert engine.inspect(name)["state"] == "missing"
            assert name not in {i["internal_id"] for i in engine.list_managed()}


@needs_engine
def test_a_busy_port_among_several_leaves_the_others_free(
    engine: DockerEngine,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    """Podman 4.3 would keep the free ones bound after a failed start; the pre-check avoids it."""
    first, last = free_port(), free_port()
    with blocker(last) as _held:
        with pytest.raises(Unavailable) as caught:
            engine.create(unique_name(request), IMAGE, LISTENER, {}, [bind(first), bind(last, 9090)])
        assert caught.value.details["reason"] == "port_in_use"
        assert caught.value.details["ports"] == [{"ip": "127.0.0.1", "port": last, "protocol": "tcp"}]
    assert is_free(first) and is_free(last)


@needs_engine
def test_the_engine_itself_refuses_a_busy_port_at_start(
    engine_url: str,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    """Without lightd's pre-check: create succeeds, start fails, create removes what it made."""
    name = unique_name(request)
    with DockerEngine(engine_url, check_ports=False) as raw, blocker() as held:
        port = held.getsockname()[1]
        with pytest.raises(Unavailable) as caught:
            raw.create(name, IMAGE, LISTENER, {}, [bind(port)])
        assert caught.value.details["reason"] == "port_in_use"
        assert "address already in use" in caught.value.details["engine_message"]
        assert raw.inspect(name)["state"] == "missing"


@needs_engine
def test_created_then_started_separately_sees_a_busy_port(
    engine: DockerEngine,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    port = free_port()
    engine_id = engine.create(unique_name(request), IMAGE, LISTENER, {}, [bind(port)], start=False)
    with blocker(port):
        with pytest.raises(Unavailable) as caught:
            engine.start(engine_id)
        assert caught.value.details["reason"] == "port_in_use"
        assert engine.inspect(engine_id)["state"] == "created"
    engine.start(engine_id)
    assert read_from(port) == b"hello\n"
    engine.start(engine_id)  # already running: nothing to do


@needs_engine
def test_stop_frees_the_port_and_start_takes_it_again(
    engine: DockerEngine,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    """Also right after a client was served, as a game server's players are.

    The client reads to the end, so the listener's side closes first, every time. On Docker
    Engine that side is its userland proxy's socket in the engine's namespace: it stays in
    TIME_WAIT on the published port for 60 s, while the engine itself could start again at once
    (its proxy binds with SO_REUSEADDR).
    """
    port = free_port()
    engine_id = engine.create(unique_name(request), IMAGE, LISTENER, {}, [bind(port)])
    assert served_whole(port) == b"hello\n"
    engine.stop(engine_id, timeout=1)
    assert engine.inspect(engine_id)["state"] == "exited"
    assert connection_refused(port) and is_free(port)
    engine.start(engine_id)
    assert read_from(port) == b"hello\n"


def served_whole(port: int, ip: str = "127.0.0.1", timeout: float = 10.0) -> bytes:
    """What the listener on ``ip:port`` sends on one connection, read until it closes it."""
    first = read_from(port, ip, timeout)  # waits for the listener to be up (one connection)
    with socket.create_connection((ip, port), timeout=timeout) as s:
        chunks = []
        while chunk := s.recv(1024):
            chunks.append(chunk)
    assert b"".join(chunks) == first
    return first


@needs_engine
def test_rebind_by_create_remove_rename(
    engine: DockerEngine,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    """The service's rebind: a new container under a temporary name, then the swap."""
    name = unique_name(request)
    old_port, new_port = free_port(), free_port()
    old_id = engine.create(name, IMAGE, LISTENER, {}, [bind(old_port)])
    assert read_from(old_port) == b"hello\n"

    temp = f"{name}.rebind"
    new_id = engine.create(temp, IMAGE, LISTENER, {}, [bind(new_port)], internal_id=name)
    assert read_from(new_port) == b"hello\n"
    engine.remove(old_id)
    engine.rename(new_id, name)

    info = engine.inspect(name)
    assert info["id"] == new_id and info["name"] == name and info["internal_id"] == name
    assert info["bindings"] == [bind(new_port)]
    assert engine.inspect(temp)["state"] == "missing"
    assert connection_refused(old_port) and is_free(old_port)
    assert read_from(new_port) == b"hello\n"
    assert [i["id"] for i in engine.list_managed() if i["internal_id"] == name] == [new_id]


@needs_engine
def test_rename_errors(engine: DockerEngine, request: pytest.FixtureRequest) -> None:  # noqa: F811
    a = engine.create(unique_name(request), IMAGE, "sleep 600", {}, [], start=False)
    b_name = unique_name(request)
    engine.create(b_name, IMAGE, "sleep 600", {}, [], start=False)
    with pytest.raises(Unavailable) as caught:
        engine.rename(a, b_name)
    assert caught.value.details["reason"] == "name_in_use"
    with pytest.raises(NotFound):
        engine.rename(unique_name(request, "missing"), unique_name(request))
    with pytest.raises(InvalidInput):
        engine.rename(a, "not a name!")


@needs_engine
def test_engine_errors_are_translated(
    engine: DockerEngine,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    name = unique_name(request)
    with pytest.raises(NotFound) as caught:
        engine.create(name, "localhost/lightd-no-such-image:latest", None, {}, [], start=False)
    assert caught.value.details["reason"] == "image_not_found"

    engine.create(name, IMAGE, ["sleep", "600"], {}, [], start=False)
    with pytest.raises(Unavailable) as dup:
        engine.create(name, IMAGE, ["sleep", "600"], {}, [], start=False)
    assert dup.value.details["reason"] == "name_in_use"

    missing = unique_name(request, "missing")
    assert engine.inspect(missing)["state"] == "missing"
    engine.remove(missing)
    with pytest.raises(NotFound):
        engine.stop(missing)
    with pytest.raises(NotFound):
        engine.start(missing)
    with pytest.raises(InvalidInput):
        engine.create("bad name", IMAGE, None, {}, [])
    with pytest.raises(InvalidInput):
        engine.create(name + "x", IMAGE, None, {}, [bind(free_port()), bind(free_port(), 1)] * 2)


@needs_engine
def test_list_managed_finds_only_labelled_containers(
    engine: DockerEngine,  # noqa: F811
    engine_url: str,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    ours = unique_name(request)
    engine.create(ours, IMAGE, "sleep 600", {}, [], start=False)
    foreign = unique_name(request, "foreign")
    api = docker.APIClient(base_url=engine_url, version="1.41")
    try:
        api.create_container(IMAGE, "sleep 600", name=foreign)
    finally:
        api.close()
    names = {i["name"]: i for i in engine.list_managed()}
    assert ours in names and names[ours]["internal_id"] == ours
    assert foreign not in names
    assert engine.inspect(foreign)["internal_id"] is None
    assert all(i["internal_id"] for i in names.values())
    assert LABEL == "lightd.internal_id"


@needs_engine
def test_parallel_operations_on_different_containers(
    engine: DockerEngine,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    """One DockerEngine shared by worker threads, as the service will use it."""
    ports = [free_port() for _ in range(4)]
    names = [unique_name(request) for _ in ports]

    def life(i: int) -> bytes:
        engine_id = engine.create(names[i], IMAGE, LISTENER, {}, [bind(ports[i])])
        answer = read_from(ports[i])
        engine.remove(engine_id)
        return answer

    with ThreadPoolExecutor(len(ports)) as pool:
        assert list(pool.map(life, range(len(ports)))) == [b"hello\n"] * len(ports)
    assert all(is_free(p) for p in ports)


@needs_engine
def test_each_target_is_the_engine_it_names_and_the_test_runs_where_it_publishes(
    engine_target: EngineTarget,
) -> None:
    api = docker.APIClient(base_url=engine_target.url, version="1.41")
    try:
        components = [str(c.get("Name", "")) for c in api.version().get("Components") or ()]
    finally:
        api.close()
    assert ("Podman Engine" in components) == (engine_target.kind == "podman"), components
    if engine_target.kind == "docker":
        assert engine_target.netns is not None and net_namespace() != HOST_NS
        # The namespace the test sits in is the engine's (a netns path is a mount of its inode).
        assert net_namespace() == f"net:[{os.stat(engine_target.netns).st_ino}]"
    else:
        assert engine_target.netns is None and net_namespace() == HOST_NS


@needs_engine
def test_leaving_the_engine_namespace_is_sure_when_the_block_fails(docker_target: EngineTarget) -> None:
    assert net_namespace() == HOST_NS
    with pytest.raises(ValueError), inside(docker_target):
        assert net_namespace() != HOST_NS
        raise ValueError("a failing test")
    assert net_namespace() == HOST_NS


@needs_engine
def test_the_ipv4_wildcard_answers_tcp_and_udp_on_every_ipv4_address(
    engine: DockerEngine,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    """0.0.0.0 as the seed's users bind it (Podman 4.3 needs it sent as HostIp "").

    UDP goes through 127.0.0.1 only: Docker Engine's userland proxy, which carries loopback
    traffic to published ports, answers a datagram sent to 127.0.0.2 from 127.0.0.1 (the source
    its wildcard socket gets), and a connected client drops that answer. Traffic from other
    hosts is NATed instead and answered from the address it was sent to.
    """
    port = free_port("tcp", "0.0.0.0")  # free on every address, tcp and udp
    wanted = [Binding("0.0.0.0", port, "tcp", 8080), Binding("0.0.0.0", port, "udp", 8080)]
    engine_id = engine.create(unique_name(request), IMAGE, LISTENER_TCP_UDP, {}, wanted)
    assert engine.inspect(engine_id)["bindings"] == sorted(wanted)
    payload = f"through 127.0.0.1:{port}".encode()
    assert udp_round_trip(port, "127.0.0.1", payload) == payload
    for ip in ("127.0.0.1", "127.0.0.2"):  # all of 127/8 is local: two addresses, no interface
        assert read_from(port, ip) == b"hello\n"
    # IPv4 only, as the entry says: Docker Engine would also take [::] for HostIp "", and the
    # pool may give the :: entry of this port to another container.
    assert connection_refused(port, "::1")
    engine.remove(engine_id)
    assert connection_refused(port) and udp_silent(port)


@needs_engine
def test_the_ipv6_wildcard_never_publishes_on_ipv4_and_on_ipv6_only_where_the_engine_can(
    engine_target: EngineTarget,
    engine: DockerEngine,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    """``::`` answers on ::1 where the engine can carry IPv6, and is refused where it cannot.

    Docker Engine's proxy listens on [::] and carries tcp and udp to the container's IPv4
    address. Podman 4.3's default network has no IPv6: conmon would hold [::]:port (accepting
    connections) with no rule forwarding it, so nothing would ever answer; the adapter refuses
    such a container before creating anything (409, reason ``ipv6_unreachable``).
    """
    port = free_port("tcp", "::")
    wanted = [Binding("::", port, "tcp", 8080), Binding("::", port, "udp", 8080)]
    name = unique_name(request)
    if engine_target.kind == "podman":
        with pytest.raises(Conflict, match="has no IPv6") as refused:
            engine.create(name, IMAGE, LISTENER_TCP_UDP, {}, wanted)
        assert refused.value.details["reason"] == "ipv6_unreachable"
        assert engine.inspect(name)["state"] == "missing"  # nothing was made
        assert is_free(port, "tcp", "::")
        return
    engine_id = engine.create(name, IMAGE, LISTENER_TCP_UDP, {}, wanted)
    info = engine.inspect(engine_id)
    assert info["running"] and info["bindings"] == sorted(wanted)
    assert connection_refused(port, "127.0.0.1") and udp_silent(port, "127.0.0.1")
    assert udp_round_trip(port, "::1", b"six") == b"six"
    assert read_from(port, "::1") == b"hello\n"


# -- no engine reachable -------------------------------------------------------------------------


def test_unreachable_socket_is_unavailable_not_missing(tmp_path: Path) -> None:
    url = socket_url(str(tmp_path / "nothing.sock"))
    eng = DockerEngine(url)
    assert not eng.ping()
    with pytest.raises(Unavailable) as caught:
        eng.inspect("anything")
    assert caught.value.details["reason"] == "unreachable"
    assert "does not exist" in caught.value.message
    with pytest.raises(Unavailable):
        eng.create("c1", IMAGE, None, {}, [bind(free_port())])
    with pytest.raises(Unavailable):
        eng.list_managed()

    # A socket file nobody listens on.
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))
        eng = DockerEngine(str(stale))
        assert eng.diagnose() == f"nothing listens on the socket {stale}"
        with pytest.raises(Unavailable):
            eng.remove("anything")

    chosen, reason = detect("auto", str(tmp_path / "nothing.sock"))
    assert isinstance(chosen, NoEngine) and "bookkeeping only" in reason
    chosen, reason = detect("docker", str(tmp_path / "nothing.sock"))
    assert isinstance(chosen, DockerEngine) and "does not answer" in reason
    chosen, reason = detect("none", "/var/run/docker.sock")
    assert isinstance(chosen, NoEngine)
    with pytest.raises(InvalidInput):
        detect("podman", "/var/run/docker.sock")


# -- NoEngine ------------------------------------------------------------------------------------


def test_no_engine_keeps_books_only() -> None:
    eng = NoEngine()
    assert eng.kind == "none" and eng.ping()
    port = free_port()
    engine_id = eng.create("game1", IMAGE, "sleep 1", {"A": "1"}, [bind(port)])
    assert engine_id == "none-game1"
    assert is_free(port)  # nothing was bound
    info = eng.inspect(engine_id)
    assert info["state"] == "untracked" and not info["running"]
    assert info["bindings"] == [bind(port)] and info["internal_id"] == "game1"
    assert eng.inspect("game1") == info
    assert [i["id"] for i in eng.list_managed()] == ["none-game1"]
    with pytest.raises(Unavailable):
        eng.create("game1", IMAGE, None, {}, [])

    # Rebind the same way as on a real eng.
    temp_id = eng.create("game1.rebind", IMAGE, None, {}, [bind(port + 1)], internal_id="game1")
    eng.start(temp_id)
    eng.stop(engine_id)
    eng.remove(engine_id)
    eng.rename(temp_id, "game1")
    info = eng.inspect("game1")
    assert info["id"] == temp_id and info["bindings"] == [bind(port + 1)]
    assert info["internal_id"] == "game1"

    eng.remove(temp_id)
    eng.remove(temp_id)  # missing is not an error
    assert eng.list_managed() == []
    # What it does not remember (e.g. after a restart) is untracked, never missing.
    assert eng.inspect("none-other")["state"] == "untracked"
    with pytest.raises(NotFound):
        eng.rename("none-other", "x")
