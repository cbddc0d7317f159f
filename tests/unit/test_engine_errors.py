"""The engine adapter's one translation table: each foreign exception to a reason and a sentence."""

from __future__ import annotations

import builtins

import docker.errors
import pytest
import requests
import requests.exceptions
from hypothesis import given
from hypothesis import strategies as st

import lightd.adapters.engine as engine_package
from lightd.adapters.engine.errors import (
    REASONS,
    TABLE,
    Call,
    Rule,
    container_not_found,
    ipv6_unreachable,
    port_in_use,
    translate,
    translating,
    unreachable,
)
from lightd.core.containers import Binding
from lightd.errors import InvalidInput, LightdError, NotFound, Unavailable

ENGINE = "unix:///run/lightd-podman/podman.sock"
CALL = Call("create", "mc-1", ENGINE, 30.0)


def api_error(status: int, explanation: str, cls: type = docker.errors.APIError) -> Exception:
    """What the SDK raises for an error answer of the engine (its own constructor's way)."""
    response = requests.Response()
    response.status_code = status
    response.url = "http+docker://localhost/v1.41/containers/create"
    response.reason = "Error"
    return cls(requests.exceptions.HTTPError("error", response=response), response, explanation)


def call(op: str = "create", target: str = "mc-1", image: str | None = None) -> Call:
    return Call(op, target, ENGINE, 30.0, image)


BUSY = (
    "driver failed programming external connectivity on endpoint mc-1: Error starting userland "
    "proxy: listen tcp4 0.0.0.0:26001: bind: address already in use."
)
NAME_TAKEN = 'Conflict. The container name "/mc-1" is already in use by container "5f2c".'

# (exception, call, class, reason, the sentence, details besides the reason)
CASES = [
    (
        api_error(404, "No such image: localhost/nothing:latest", docker.errors.ImageNotFound),
        call(image="localhost/nothing:latest"),
        NotFound,
        "image_not_found",
        "The container engine has no image localhost/nothing:latest.",
        {"image": "localhost/nothing:latest"},
    ),
    (
        api_error(404, "No such container: mc-2", docker.errors.NotFound),
        call("stop", "mc-2"),
        NotFound,
        "container_not_found",
        "The container engine has no container mc-2.",
        {"container": "mc-2"},
    ),
    (
        api_error(500, BUSY),
        call("start", "mc-1"),
        Unavailable,
        "port_in_use",
        f"Cannot start container mc-1: a host port is already bound ({BUSY[:-1]}).",
        {"engine_status": 500, "engine_message": BUSY[:-1]},
    ),
    (
        api_error(409, NAME_TAKEN),
        call(),
        Unavailable,
        "name_in_use",
        f"Cannot create container mc-1: the name is already in use ({NAME_TAKEN[:-1]}).",
        {"engine_status": 409, "engine_message": NAME_TAKEN[:-1]},
    ),
    (
        api_error(409, "conflict"),  # a 409 names the name even where the text does not
        call("rename", "mc-1"),
        Unavailable,
        "name_in_use",
        "Cannot rename container mc-1: the name is already in use (conflict).",
        {"engine_status": 409, "engine_message": "conflict"},
    ),
    (
        api_error(500, "crun: executable file `nope` not found in $PATH: No such file or directory"),
        call("start", "abc123"),
        Unavailable,
        "start_failed",
        "The container engine failed to start abc123 (crun: executable file `nope` not found in "
        "$PATH: No such file or directory).",
        {
            "engine_status": 500,
            "engine_message": "crun: executable file `nope` not found in $PATH: No such file or directory",
        },
    ),
    (
        # Podman's answer for a container removed between a list and an inspect: gone all the same.
        api_error(500, "container 0c40 does not exist in database: no such container"),
        call("inspect", "0c40"),
        NotFound,
        "container_not_found",
        "The container engine has no container 0c40.",
        {"container": "0c40"},
    ),
    (
        api_error(500, "  storage is full.  "),
        call("create", "mc-1"),
        Unavailable,
        "engine_error",
        "The container engine failed to create mc-1 (storage is full).",
        {"engine_status": 500, "engine_message": "storage is full"},
    ),
    (
        api_error(500, ""),  # no text from the engine: the SDK's own line says what happened
        call("create", "mc-1"),
        Unavailable,
        "engine_error",
        "The container engine failed to create mc-1 (500 Server Error for "
        "http+docker://localhost/v1.41/containers/create: Error).",
        {
            "engine_status": 500,
            "engine_message": "500 Server Error for http+docker://localhost/v1.41/containers/create: Error",
        },
    ),
    (
        requests.exceptions.ReadTimeout("read timed out"),
        call("remove", "abc123"),
        Unavailable,
        "timeout",
        f"The container engine at {ENGINE} did not answer within 30s while trying to remove abc123.",
        {"engine": ENGINE},
    ),
    (
        requests.exceptions.ConnectTimeout("connect timed out"),  # a ConnectionError too
        call("inspect", "mc-1"),
        Unavailable,
        "timeout",
        f"The container engine at {ENGINE} did not answer within 30s while trying to inspect mc-1.",
        {"engine": ENGINE},
    ),
    (
        requests.exceptions.ConnectionError("Connection aborted."),
        call(),
        Unavailable,
        "unreachable",
        f"The container engine at {ENGINE} is not reachable (Connection aborted.).",
        {"engine": ENGINE},
    ),
    (
        ConnectionRefusedError(111, "Connection refused"),
        call(),
        Unavailable,
        "unreachable",
        f"The container engine at {ENGINE} is not reachable ([Errno 111] Connection refused).",
        {"engine": ENGINE},
    ),
    (
        docker.errors.DockerException("Error while fetching server API version"),
        call("connect to", ENGINE),
        Unavailable,
        "engine_error",
        f"The container engine at {ENGINE} failed to connect to {ENGINE} (Error while fetching "
        "server API version).",
        {"engine": ENGINE},
    ),
    (
        ValueError("Invalid JSON"),
        call("list", "containers"),
        Unavailable,
        "engine_error",
        f"The container engine at {ENGINE} failed to list containers (Invalid JSON).",
        {"engine": ENGINE},
    ),
]


@pytest.mark.parametrize(
    ("exc", "during", "kind", "reason", "sentence", "details"),
    CASES,
    ids=[f"{type(c[0]).__name__}-{c[3]}" for c in CASES],
)
def test_each_engine_failure_becomes_one_reason_and_one_sentence(
    exc: Exception,
    during: Call,
    kind: type[LightdError],
    reason: str,
    sentence: str,
    details: dict[str, object],
) -> None:
    error = translate(exc, during)
    assert type(error) is kind
    assert error.message == sentence
    assert error.details == {"reason": reason, **details}


def test_every_reason_the_adapter_documents_is_given_and_no_other() -> None:
    given_by_table = {rule.reason for rules in TABLE.values() for rule in rules}
    own = {
        unreachable(ENGINE, "the socket does not exist").details["reason"],
        container_not_found("x").details["reason"],
        port_in_use([Binding("0.0.0.0", 1, "tcp", 1)], "x").details["reason"],
        ipv6_unreachable([Binding("::", 1, "tcp", 1)], "x").details["reason"],
    }
    assert given_by_table | own == set(REASONS)
    assert len(REASONS) == len(set(REASONS))
    for reason in REASONS:  # and the package says what each one means
        assert f"``{reason}``" in (engine_package.__doc__ or "")


def test_every_class_of_the_table_ends_with_a_rule_without_conditions() -> None:
    for cls, rules in TABLE.items():
        assert rules, cls
        last = rules[-1]
        assert (last.contains, last.status, last.op) == (None, None, None), cls
        assert all(issubclass(rule.error, LightdError) for rule in rules)


def _lookup(cls: type[BaseException]) -> tuple[Rule, ...]:
    return next(TABLE[c] for c in cls.__mro__ if c in TABLE)


def _foreign_exceptions() -> list[type[BaseException]]:
    """Every exception class of the SDK and requests, and the OSErrors a socket may raise."""
    found: list[type[BaseException]] = []
    for module, base in ((docker.errors, Exception), (requests.exceptions, Exception), (builtins, OSError)):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, base) and value not in found:
                found.append(value)
    return found


@pytest.mark.parametrize("cls", _foreign_exceptions(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_exception_the_sdk_or_requests_can_raise_finds_its_rules(
    cls: type[BaseException],
) -> None:
    reasons = {rule.reason for rule in _lookup(cls)}
    assert reasons <= set(REASONS)
    if issubclass(cls, requests.exceptions.Timeout):
        assert reasons == {"timeout"}
    elif issubclass(cls, requests.exceptions.ConnectionError | ConnectionError):
        assert reasons == {"unreachable"}


def test_order_decides_a_busy_port_before_a_taken_name() -> None:
    # "address already in use" holds "already in use", and Podman answers a busy port with 409.
    error = translate(api_error(409, "listen tcp :26001: bind: address already in use"), CALL)
    assert error.details["reason"] == "port_in_use"


def test_a_lightd_error_is_kept_as_it_is() -> None:
    original = InvalidInput("bad")
    assert translate(original, CALL) is original
    with pytest.raises(InvalidInput) as caught, translating(CALL):
        raise original
    assert caught.value is original and caught.value.__cause__ is None


def test_translating_raises_the_translation_from_the_original() -> None:
    original = requests.exceptions.ConnectionError("refused")
    with pytest.raises(Unavailable) as caught, translating(CALL):
        raise original
    assert caught.value.details["reason"] == "unreachable"
    assert caught.value.__cause__ is original
    with translating(CALL):
        pass  # nothing raised, nothing to translate


def test_translating_lets_an_interrupt_through() -> None:
    with pytest.raises(KeyboardInterrupt), translating(CALL):
        raise KeyboardInterrupt


@given(
    status=st.sampled_from([400, 403, 409, 500, 503]),
    message=st.text(min_size=1, max_size=80),
    op=st.sampled_from(["create", "start", "stop", "rename"]),
)
def test_any_engine_answer_gets_a_reason_and_a_sentence_quoting_it(
    status: int, message: str, op: str
) -> None:
    error = translate(api_error(status, message), call(op, "mc-1"))
    said = message.strip().rstrip(".")
    assert isinstance(error, Unavailable)
    assert error.details["engine_message"] == said and error.details["engine_status"] == status
    assert f"({said})." in error.message  # braces in the text are the engine's, not a template
    if "address already in use" in said:
        expected = "port_in_use"
    elif "already in use" in said or status == 409:
        expected = "name_in_use"
    else:
        expected = "start_failed" if op == "start" else "engine_error"
    assert error.details["reason"] == expected


def test_own_errors_use_the_same_reasons() -> None:
    down = unreachable(ENGINE, "nothing listens on the socket /x.sock")
    assert down.message == (
        f"The container engine at {ENGINE} is not reachable: nothing listens on the socket /x.sock."
    )
    assert down.details == {"reason": "unreachable", "engine": ENGINE}
    gone = container_not_found("abc")
    assert isinstance(gone, NotFound)
    assert gone.message == "The container engine has no container abc."
    assert gone.details == {"reason": "container_not_found", "container": "abc"}
    ports = [Binding("0.0.0.0", 25565, "tcp", 25565), Binding("::", 19132, "udp", 19132)]
    busy = port_in_use(ports, "mc-1")
    assert busy.message.startswith("Cannot start container mc-1: host port 0.0.0.0:25565/tcp, ")
    assert busy.message.endswith("19132/udp is already bound by another process.")
    assert busy.details["ports"] == [
        {"ip": "0.0.0.0", "port": 25565, "protocol": "tcp"},
        {"ip": "::", "port": 19132, "protocol": "udp"},
    ]
