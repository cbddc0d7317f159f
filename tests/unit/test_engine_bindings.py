"""Published ports between lightd and the engine: what is sent, and how the answer is read back."""

from __future__ import annotations

import ipaddress
from typing import Any

import docker.types
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lightd.adapters.engine.bindings import (
    canonical_host_ip,
    check_bindings,
    describe,
    engine_host_ip,
    exposed_ports,
    parse_port_bindings,
    port_bindings,
)
from lightd.adapters.engine.docker_api import container_info
from lightd.core.containers import Binding
from lightd.errors import InvalidInput

API = "1.41"


def sent(bindings: list[Binding], podman: bool = True) -> dict[str, Any]:
    """``HostConfig.PortBindings`` exactly as the SDK puts it on the wire for these bindings."""
    host_config = docker.types.HostConfig(API, port_bindings=port_bindings(bindings, podman=podman))
    return dict(host_config["PortBindings"])


# -- what is sent --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "podman", "host_ip"),
    [
        ("0.0.0.0", True, ""),  # "0.0.0.0" is a DNAT rule no packet matches on Podman 4.3
        ("0.0.0.0", False, "0.0.0.0"),  # "" would publish on [::] too on Docker Engine
        ("::", True, "::"),  # "" would publish on IPv4 too
        ("::", False, "::"),
        ("127.0.0.1", True, "127.0.0.1"),
        ("127.0.0.1", False, "127.0.0.1"),
        ("::1", True, "::1"),
        ("192.0.2.7", False, "192.0.2.7"),
    ],
)
def test_engine_host_ip_says_the_ipv4_wildcard_in_each_engines_words_and_all_else_as_it_is(
    ip: str, podman: bool, host_ip: str
) -> None:
    assert engine_host_ip(ip, podman=podman) == host_ip
    assert sent([Binding(ip, 26001, "tcp", 8080)], podman) == {
        "8080/tcp": [{"HostIp": host_ip, "HostPort": "26001"}]
    }


def test_several_host_ports_of_one_container_port_and_both_protocols() -> None:
    bindings = check_bindings(
        [
            Binding("0.0.0.0", 25565, "tcp", 25565),
            Binding("::", 25565, "tcp", 25565),
            Binding("0.0.0.0", 19132, "udp", 19132),
        ]
    )
    assert sent(bindings) == {
        "25565/tcp": [{"HostIp": "", "HostPort": "25565"}, {"HostIp": "::", "HostPort": "25565"}],
        "19132/udp": [{"HostIp": "", "HostPort": "19132"}],
    }
    assert exposed_ports(bindings) == [(19132, "udp"), (25565, "tcp")]


# -- checking what lightd asks for ----------------------------------------------------------------


def test_check_bindings_writes_ips_in_canonical_form() -> None:
    given_ = [Binding("0:0::0", 1, "tcp", 2), Binding("2001:DB8:0::1", 3, "udp", 4)]
    assert check_bindings(given_) == [
        Binding("::", 1, "tcp", 2),
        Binding("2001:db8::1", 3, "udp", 4),
    ]


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (("0.0.0.0", 25565, "tcp", 25565), "must be a Binding"),
        (Binding("0.0.0.0", 25565, "sctp", 25565), "protocol must be tcp or udp"),
        (Binding("0.0.0.0", 0, "tcp", 25565), "host_port must be an integer from 1 to 65535"),
        (Binding("0.0.0.0", 65536, "tcp", 25565), "host_port must be"),
        (Binding("0.0.0.0", True, "tcp", 25565), "host_port must be"),
        (Binding("0.0.0.0", "25565", "tcp", 25565), "host_port must be"),
        (Binding("0.0.0.0", 25565, "tcp", 0), "container_port must be"),
        (Binding("localhost", 25565, "tcp", 25565), "host_ip is not a valid IP address"),
        (Binding("", 25565, "tcp", 25565), "host_ip is not a valid IP address"),
        (Binding("[::]", 25565, "tcp", 25565), "host_ip is not a valid IP address"),
    ],
)
def test_check_bindings_refuses_a_bad_binding_saying_what_is_wrong(bad: Any, says: str) -> None:
    with pytest.raises(InvalidInput, match=says.replace("(", r"\(")):
        check_bindings([Binding("127.0.0.1", 1, "tcp", 1), bad])


def test_check_bindings_refuses_one_host_port_twice_even_written_two_ways() -> None:
    with pytest.raises(InvalidInput, match=r"the host port :::80/tcp is bound twice"):
        check_bindings([Binding("::", 80, "tcp", 80), Binding("0::0", 80, "tcp", 8080)])
    # The same number on the other protocol, or on another ip, is another host port.
    assert len(check_bindings([Binding("::", 80, "tcp", 80), Binding("::", 80, "udp", 80)])) == 2


# -- reading the engine's answer -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host_ip", "ip"),
    [
        ("", "0.0.0.0"),  # what lightd sends for the IPv4 wildcard, and Docker's own default
        ("0.0.0.0", "0.0.0.0"),  # what older lightd sent, and Docker Engine reports for it
        ("::", "::"),
        ("[::]", "::"),
        ("0:0::0", "::"),
        ("::1", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("not-an-ip", "not-an-ip"),  # kept as the engine said it, for a message
    ],
)
def test_host_ip_of_the_engine_reads_back_in_lightds_form(host_ip: str, ip: str) -> None:
    assert canonical_host_ip(host_ip) == ip
    parsed = parse_port_bindings({"8080/tcp": [{"HostIp": host_ip, "HostPort": "26001"}]})
    assert parsed == [Binding(ip, 26001, "tcp", 8080)]


def test_port_bindings_are_read_sorted_with_tcp_by_default() -> None:
    answer = {
        "9090": [{"HostIp": "", "HostPort": "26002"}],
        "19132/udp": [{"HostIp": "::", "HostPort": "19132"}, {"HostIp": "", "HostPort": "19132"}],
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "26001"}],
    }
    assert parse_port_bindings(answer) == [
        Binding("0.0.0.0", 19132, "udp", 19132),
        Binding("0.0.0.0", 26002, "tcp", 9090),
        Binding("127.0.0.1", 26001, "tcp", 8080),
        Binding("::", 19132, "udp", 19132),
    ]


@pytest.mark.parametrize(
    ("answer", "read"),
    [
        (None, []),
        ([], []),
        ("8080/tcp", []),
        ({}, []),
        ({"8080/tcp": None}, []),  # exposed, not published
        ({"8080/tcp": []}, []),
        ({"8080/tcp": 26001}, []),
        ({"8080/tcp": "0.0.0.0:26001"}, []),
        ({"http/tcp": [{"HostIp": "", "HostPort": "26001"}]}, []),
        ({"8080/tcp": ["0.0.0.0:26001", None, 7]}, []),
        ({"8080/tcp": [{"HostIp": ""}]}, [Binding("0.0.0.0", 0, "tcp", 8080)]),
        ({"8080/tcp": [{"HostIp": None, "HostPort": ""}]}, [Binding("0.0.0.0", 0, "tcp", 8080)]),
        ({"8080/tcp": [{"HostPort": "abc"}]}, [Binding("0.0.0.0", 0, "tcp", 8080)]),
        ({"8080/tcp": [{"HostPort": ["26001"]}]}, [Binding("0.0.0.0", 0, "tcp", 8080)]),
        ({"8080/tcp": [{"HostPort": 26001}]}, [Binding("0.0.0.0", 26001, "tcp", 8080)]),
    ],
)
def test_an_answer_of_a_bad_shape_is_read_without_raising(answer: Any, read: list[Binding]) -> None:
    assert parse_port_bindings(answer) == read


def test_container_info_reads_an_inspect_answer() -> None:
    attrs = {
        "Id": "5f2c",
        "Name": "/mc-1",
        "Image": "sha256:1234",
        "Config": {"Image": "localhost/busybox:latest", "Labels": {"lightd.internal_id": "mc-1"}},
        "State": {"Status": "exited", "Running": False, "ExitCode": 137, "Error": ""},
        "HostConfig": {"PortBindings": {"8080/tcp": [{"HostIp": "", "HostPort": "26001"}]}},
        "NetworkSettings": {"Ports": {"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "40000"}]}},
    }
    assert container_info(attrs) == {
        "id": "5f2c",
        "name": "mc-1",
        "internal_id": "mc-1",
        "state": "exited",
        "running": False,
        "image": "localhost/busybox:latest",
        "bindings": [Binding("0.0.0.0", 26001, "tcp", 8080)],
        "exit_code": 137,
        "error": "",
    }
    # No PortBindings (an engine that reports only what runs): NetworkSettings.Ports.
    attrs["HostConfig"] = {}
    attrs["State"] = {"ExitCode": "?"}
    info = container_info(attrs)
    assert info["bindings"] == [Binding("0.0.0.0", 40000, "tcp", 8080)]
    assert info["state"] == "unknown" and info["exit_code"] is None
    assert container_info({})["internal_id"] is None


def test_describe_names_each_host_port() -> None:
    assert describe([Binding("0.0.0.0", 25565, "tcp", 1), Binding("127.0.0.1", 19132, "udp", 1)]) == (
        "0.0.0.0:25565/tcp, 127.0.0.1:19132/udp"
    )


# -- both ways -----------------------------------------------------------------------------------

ips = st.one_of(
    st.sampled_from(["0.0.0.0", "::", "127.0.0.1", "::1"]),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
bindings_lists = st.lists(
    st.builds(
        Binding,
        ips,
        st.integers(1, 65535),
        st.sampled_from(["tcp", "udp"]),
        st.integers(1, 65535),
    ),
    max_size=8,
    unique_by=lambda b: (ipaddress.ip_address(b.host_ip), b.host_port, b.protocol),
)


@given(bindings_lists, st.booleans())
def test_what_is_sent_reads_back_as_the_same_bindings(bindings: list[Binding], podman: bool) -> None:
    checked = check_bindings(bindings)
    assert parse_port_bindings(sent(checked, podman)) == sorted(checked)
    assert set(exposed_ports(checked)) == {(b.container_port, b.protocol) for b in bindings}
    for row in (host for hosts in sent(checked, podman).values() for host in hosts):
        assert row["HostIp"] != ("0.0.0.0" if podman else "")  # each engine's dead or wider word
