"""Wildcard and specific-ip pool entries through a real `lightd serve` on the real engine.

A container on a ``0.0.0.0`` entry answers through every local IPv4 address (127.0.0.1, and
127.0.0.2: all of 127/8 is local on lo, so no interface is touched), on tcp and udp, also after
a rebind, while the old port is refused and the pool's entries name the container that holds
them. A container on ``127.0.0.1`` answers there and not on 127.0.0.2.

A ``::`` entry: on Docker Engine it answers through ``::1`` (its userland proxy carries the
connection to the container's IPv4 address) and never through IPv4, and an IPv4 and an IPv6
wildcard entry of one number serve two containers. Podman's default network has no IPv6 (a
``::`` binding there accepted connections and never answered them), so a create on ``::`` is
refused with 409 ``ipv6_unreachable`` before anything is made, and the IPv4 sibling is unharmed.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from lightd.adapters.engine import DockerEngine
from tests.conftest import HEADERS
from tests.engine_support import (
    IMAGE,
    LISTENER,
    UDP_ECHO,
    connection_refused,
    free_port,
    read_from,
    udp_round_trip,
    unique_name,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def served(engine_served):
    return engine_served


def call(served, method, path, **kwargs):
    return httpx.request(method, served.url + path, headers=HEADERS, timeout=120, **kwargs)


def add(served, ip, port, protocol="tcp"):
    added = call(served, "POST", "/network/ports", json={"ip": ip, "port": port, "protocol": protocol})
    assert added.status_code == 201, added.text


def holders(served) -> dict[tuple[str, int, str], str | None]:
    """Every pool entry and the internal_id of the container holding it (None: free)."""
    listed = call(served, "GET", "/network/ports").json()["ports"]
    assert all(e["in_use"] for e in listed if e["container"] is not None), listed
    return {(e["ip"], e["port"], e["protocol"]): e["container"] for e in listed}


def binding(ip, port, protocol="tcp"):
    return {"ip": ip, "port": port, "protocol": protocol, "container_port": 8080}


def create(served, name, command, ports):
    body = {"internal_id": name, "image": IMAGE, "startup_command": command, "ports": ports}
    return call(served, "POST", "/containers", json=body)


def rebind(served, name, ports):
    return call(served, "POST", f"/containers/{name}/rebind-network", json={"ports": ports})


def published(eng: DockerEngine, served, name) -> list[tuple[str, int, str]]:
    """What the engine publishes for the container lightd records under ``name``."""
    live = call(served, "GET", f"/containers/{name}").json()
    assert live["engine_state"] == "running", live
    return [(b.host_ip, b.host_port, b.protocol) for b in eng.inspect(live["engine_id"])["bindings"]]


def wildcard_port(protocol="tcp") -> int:
    """A port free on every IPv4 address of this namespace, so a wildcard entry can take it."""
    return free_port(protocol, "0.0.0.0")


def udp_echo_from_any(port: int, ip: str, timeout: float = 10.0) -> tuple[str, int]:
    """Send a datagram to ``ip:port`` until it comes back whole; return where the answer came from.

    Retries until ``timeout``: the echo needs a moment to start, and UDP may lose a datagram. The
    socket is not connected, unlike :func:`udp_round_trip`'s, so an answer from another local
    address counts too: Docker's userland proxy, a wildcard socket, answers a datagram sent to
    127.0.0.2 from 127.0.0.1 (the source the kernel picks), which a connected socket drops.
    """
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    payload = f"ping {port} {time.monotonic_ns()}".encode()
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            try:
                s.sendto(payload, (ip, port))
                data, source = s.recvfrom(2048)
                if data == payload:
                    return source[0], source[1]
                last = AssertionError(f"echoed {data!r}, sent {payload!r}")
            except OSError as exc:
                last = exc
        time.sleep(0.1)
    raise AssertionError(f"no UDP echo from {ip}:{port} within {timeout}s (last: {last!r})")


def udp_refused(port: int, ip: str = "127.0.0.1", timeout: float = 5.0) -> bool:
    """Whether a datagram to ``ip:port`` is refused (ICMP port unreachable): nothing holds it."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            try:
                s.connect((ip, port))
                s.send(b"anyone?")
                s.recv(2048)
            except ConnectionRefusedError:
                return True
            except OSError:
                pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def test_tcp_wildcard_answers_on_every_ipv4_address_and_after_a_rebind(served, engine, request):
    name = unique_name(request)
    first, second = wildcard_port(), wildcard_port()
    for port in (first, second):
        add(served, "0.0.0.0", port)

    created = create(served, name, LISTENER, [binding("0.0.0.0", first)])
    assert created.status_code == 201, created.text
    assert read_from(first, "127.0.0.1").startswith(b"hello")
    assert read_from(first, "127.0.0.2").startswith(b"hello")
    pool = holders(served)
    assert (pool[("0.0.0.0", first, "tcp")], pool[("0.0.0.0", second, "tcp")]) == (name, None)

    rebound = rebind(served, name, [binding("0.0.0.0", second)])
    assert rebound.status_code == 200, rebound.text
    assert read_from(second, "127.0.0.1").startswith(b"hello")
    assert read_from(second, "127.0.0.2").startswith(b"hello")
    assert connection_refused(first, "127.0.0.1")
    pool = holders(served)
    assert (pool[("0.0.0.0", first, "tcp")], pool[("0.0.0.0", second, "tcp")]) == (None, name)
    assert published(engine, served, name) == [("0.0.0.0", second, "tcp")]

    assert call(served, "DELETE", f"/containers/{name}").status_code == 200
    assert connection_refused(second, "127.0.0.1")
    assert holders(served)[("0.0.0.0", second, "tcp")] is None


def test_udp_on_a_wildcard_entry_echoes_and_follows_a_rebind(served, engine, request):
    name = unique_name(request)
    first, second = wildcard_port("udp"), wildcard_port("udp")
    for port in (first, second):
        add(served, "0.0.0.0", port, "udp")

    created = create(served, name, UDP_ECHO, [binding("0.0.0.0", first, "udp")])
    assert created.status_code == 201, created.text
    sent = f"{name} {first}".encode()
    assert udp_round_trip(first, payload=sent) == sent
    udp_echo_from_any(first, "127.0.0.2")
    pool = holders(served)
    assert (pool[("0.0.0.0", first, "udp")], pool[("0.0.0.0", second, "udp")]) == (name, None)

    rebound = rebind(served, name, [binding("0.0.0.0", second, "udp")])
    assert rebound.status_code == 200, rebound.text
    sent = f"{name} {second}".encode()
    assert udp_round_trip(second, payload=sent) == sent
    udp_echo_from_any(second, "127.0.0.2")
    assert udp_refused(first)
    pool = holders(served)
    assert (pool[("0.0.0.0", first, "udp")], pool[("0.0.0.0", second, "udp")]) == (None, name)
    assert published(engine, served, name) == [("0.0.0.0", second, "udp")]

    assert call(served, "DELETE", f"/containers/{name}").status_code == 200
    assert udp_refused(second)
    assert holders(served)[("0.0.0.0", second, "udp")] is None


def test_a_specific_ip_entry_answers_only_on_that_ip(served, engine, request):
    only, everywhere = unique_name(request), unique_name(request)
    specific, wildcard = free_port(), wildcard_port()
    add(served, "127.0.0.1", specific)
    add(served, "0.0.0.0", wildcard)
    for name, ip, port in ((only, "127.0.0.1", specific), (everywhere, "0.0.0.0", wildcard)):
        created = create(served, name, LISTENER, [binding(ip, port)])
        assert created.status_code == 201, created.text

    assert read_from(specific, "127.0.0.1").startswith(b"hello")
    assert connection_refused(specific, "127.0.0.2")
    # The same address does reach a wildcard entry: refused above means "not published there".
    assert read_from(wildcard, "127.0.0.2").startswith(b"hello")
    pool = holders(served)
    assert pool[("127.0.0.1", specific, "tcp")] == only
    assert pool[("0.0.0.0", wildcard, "tcp")] == everywhere


def refused_for_want_of_ipv6(response: httpx.Response, port: int) -> None:
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["reason"] == "ipv6_unreachable" and "no IPv6" in body["error"], body
    assert body["ports"] == [{"ip": "::", "port": port, "protocol": "tcp"}]


def test_an_ipv6_wildcard_entry_answers_on_ipv6_only_or_is_refused_up_front(
    served, engine, engine_target, request
):
    name = unique_name(request)
    port = free_port("tcp", "::")
    add(served, "::", port)
    created = create(served, name, LISTENER, [binding("::", port)])

    if engine_target.kind == "docker":
        assert created.status_code == 201, created.text
        assert holders(served)[("::", port, "tcp")] == name
        assert read_from(port, "::1").startswith(b"hello")
        assert connection_refused(port, "127.0.0.1")
        assert published(engine, served, name) == [("::", port, "tcp")]
    else:
        refused_for_want_of_ipv6(created, port)
        assert not engine.flavour().ipv6, "this test knows Podman's default network, without IPv6"
        assert holders(served)[("::", port, "tcp")] is None
        assert call(served, "GET", f"/containers/{name}").status_code == 404
        assert not [c for c in engine.list_managed() if c["internal_id"] == name]
        assert connection_refused(port, "::1")  # nothing holds [::]:port


def test_ipv4_and_ipv6_wildcards_of_one_number_are_two_entries(served, engine, engine_target, request):
    # The pool keeps 0.0.0.0:N and [::]:N apart (one wildcard per family); so must the engine.
    four, six = unique_name(request), unique_name(request)
    port = free_port("tcp", "::")
    add(served, "0.0.0.0", port)
    add(served, "::", port)
    answers = {}
    for name, ip in ((four, "0.0.0.0"), (six, "::")):
        says_its_name = ["nc", "-ll", "-p", "8080", "-e", "echo", name]
        answers[ip] = create(served, name, says_its_name, [binding(ip, port)])
    assert answers["0.0.0.0"].status_code == 201, answers["0.0.0.0"].text
    pool = holders(served)
    if engine_target.kind == "docker":
        assert answers["::"].status_code == 201, answers["::"].text
        assert (pool[("0.0.0.0", port, "tcp")], pool[("::", port, "tcp")]) == (four, six)
        assert read_from(port, "::1") == f"{six}\n".encode()
        assert published(engine, served, four) == [("0.0.0.0", port, "tcp")]
    else:
        refused_for_want_of_ipv6(answers["::"], port)
        assert (pool[("0.0.0.0", port, "tcp")], pool[("::", port, "tcp")]) == (four, None)
    assert read_from(port, "127.0.0.1") == f"{four}\n".encode()
