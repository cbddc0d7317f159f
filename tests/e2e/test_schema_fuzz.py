"""The OpenAPI document tells the truth, and schemathesis says so, against a real ``lightd serve``.

Every operation of /openapi.json is fuzzed with both headers: examples, coverage (every boundary
and every missing or wrong parameter) and random requests, valid and invalid. The daemon must
answer no 5xx, only the statuses the document lists, bodies and headers of the documented shapes;
what the schema allows must be accepted and what it forbids refused. The fuzzer's valid requests
change the pool (they claim, delete and bulk-delete ports): the checks hold whatever state it is in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from lightd.core.entry import parse_ip
from lightd.errors import InvalidInput
from tests.conftest import HEADERS, write_test_config
from tests.e2e.daemon import ServedDaemon

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
    positive_data_acceptance,
    negative_data_rejection,
    missing_required_header,
    ignored_auth,
]
# Small enough that the whole run stays far below a minute on two busy cores; the coverage phase
# adds its boundary cases on top of these. Derandomized, without a database: CI runs the same
# cases every time, and a failure replays from its seed rather than from a local .hypothesis/.
FUZZ = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
SEED = 10
STREAM = "/network/events"
# Where _steered() sends paths that name one entry: 20000-20031 exist for tcp and udp (without
# ?protocol= that is a 409), 20032-20063 for tcp only.
KNOWN_IP = "127.0.0.1"
KNOWN_PORTS = range(20000, 20064)
# The seed's own ports on the wildcard for tcp and udp (the document's examples name
# 0.0.0.0:25565), KNOWN_IP's and IPv6 ones, so that claims, random and rebinds have entries to take.
INITIAL_PORTS = [
    {"ip": "0.0.0.0", "ports": "25565-25569", "protocol": "both"},
    {"ip": "0.0.0.0", "ports": "20000-20031", "protocol": "both"},
    {"ip": KNOWN_IP, "ports": "20000-20063", "protocol": "tcp"},
    {"ip": KNOWN_IP, "ports": "20000-20031", "protocol": "udp"},
    {"ip": "::", "ports": "21000-21007", "protocol": "udp"},
]
# A range the fuzzer writes may be up to 65535 ports wide; added for random ips, again and again,
# the pool would grow past what a short run can list. The documented syntax is kept.
WIDEST_RANGE = 16
_PORT_TEXT = re.compile(r"[1-9][0-9]{0,4}")  # and at most 65535, checked below


@pytest.fixture(scope="module")
def fuzzed_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedDaemon]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    config = write_test_config(
        folder,
        # The fuzzer adds ports on random addresses: refusing non-local ones would be a 400 that
        # depends on the host's interfaces, which no schema can document.
        pool={"initial_ports": INITIAL_PORTS, "require_local_ip": False, "host_check": False},
    )
    daemon = ServedDaemon(config)
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def document(fuzzed_daemon: ServedDaemon) -> dict[str, Any]:
    response = httpx.get(fuzzed_daemon.url + "/openapi.json", timeout=10)
    assert response.status_code == 200
    return dict(response.json())


@pytest.fixture(scope="module")
def api_schema(fuzzed_daemon: ServedDaemon) -> Any:
    # An explicit config: a schemathesis.toml found in a parent folder must not change the run.
    config = schemathesis.Config(seed=SEED)
    schema = schemathesis.openapi.from_url(fuzzed_daemon.url + "/openapi.json", config=config)
    schema.config.update(base_url=fuzzed_daemon.url, headers=dict(HEADERS))
    schema.config.generation.update(deterministic=True)

    @schema.hook("map_body")  # type: ignore[untyped-decorator]
    def as_lightd_reads_it(context: Any, body: Any) -> Any:
        body = _whole_numbers(body)
        bulk = context.operation is not None and context.operation.path == "/network/ports/bulk"
        if bulk and isinstance(body, dict) and "ports" in body:
            body = {**body, "ports": _narrow(body["ports"])}
        return body

    @schema.hook("map_path_parameters")  # type: ignore[untyped-decorator]
    def onto_known_entries(context: Any, path_parameters: dict[str, Any] | None) -> Any:
        return path_parameters if path_parameters is None else _steered(path_parameters)

    return schema


def _steered(path_parameters: dict[str, Any]) -> dict[str, Any]:
    """Half the valid ``{ip}/{port}`` drawn moved onto KNOWN_IP's entries, the rest as drawn.

    A random address and port almost never name an entry, so without this the success answers of
    get, use and delete (and the 409 of an ip:port that exists for tcp and udp) would go
    unchecked. Only a valid pair is moved, onto another valid pair: the case stays as valid or
    invalid as it was generated. Which half is decided by the drawn port, so it shrinks as usual.
    """
    ip, port = path_parameters.get("ip"), path_parameters.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535 or port % 2:
        return path_parameters
    try:
        parse_ip(unquote(ip) if isinstance(ip, str) else ip)  # path parameters come URL-encoded
    except InvalidInput:
        return path_parameters
    return {**path_parameters, "ip": KNOWN_IP, "port": KNOWN_PORTS[port // 2 % len(KNOWN_PORTS)]}


def _whole_numbers(value: Any) -> Any:
    """``value`` with every integral float (``25565.0``) written as an integer.

    JSON Schema counts 25565.0 as the integer 25565, and schemathesis sends it so; lightd takes a
    port or count only written as an integer (CONTRACT.md, and the schema's descriptions say so).
    The value is the same, so the case stays exactly as valid or invalid as it was generated.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    return value


def _narrow(spec: Any) -> Any:
    """A bulk ``ports`` spec whose "A-B" ranges span at most WIDEST_RANGE ports, A <= B kept.

    "A-B" with B < A is refused (400): a rule the document states in words, as JSON Schema cannot.
    """
    if isinstance(spec, list):
        return [_narrow(item) for item in spec]
    ends = spec.split("-") if isinstance(spec, str) else []
    # Only a range of two valid ports: an invalid one must stay as invalid as it was generated.
    if len(ends) == 2 and all(_PORT_TEXT.fullmatch(end) and int(end) <= 65535 for end in ends):
        low, high = sorted(int(end) for end in ends)
        return f"{low}-{min(high, low + WIDEST_RANGE - 1)}"
    return spec


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32's lazy loader reads and renames Node._nodeid, gone since pytest 9.2.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@schema.parametrize()
@FUZZ
def test_every_operation_answers_only_what_the_schema_documents(case: Any) -> None:
    if case.operation.path == STREAM:
        return  # never ends, so no call of it returns: tests/e2e/test_events.py checks it
    case.call_and_validate(headers=dict(HEADERS), checks=CHECKS)


# -- the document itself, as a client reads it ------------------------------------------------


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for child in node.values():
            yield from _walk(child)
    elif isinstance(node, list):
        for child in node:
            yield from _walk(child)


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_no_operation_documents_fastapis_422_or_its_detail_shape(document: dict[str, Any]) -> None:
    for name, operation in _operations(document):
        assert "422" not in operation["responses"], name
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas


def test_every_error_status_answers_the_error_shape(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert error["properties"]["error"]["type"] == "string"
    assert error["additionalProperties"] is True
    for name, operation in _operations(document):
        for status, answer in operation["responses"].items():
            if status.startswith(("4", "5")):
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (name, status)


def test_guarded_operations_document_the_token_the_vendor_header_and_their_refusals(
    document: dict[str, Any],
) -> None:
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for name, operation in _operations(document):
        accept = [p for p in operation.get("parameters", []) if p["name"] == "Accept"]
        if name == "GET /api/v1/public/ping":
            assert operation["security"] == [] and not accept
            continue
        assert operation["security"] == [{"bearer": []}], name
        assert {"401", "406"} <= set(operation["responses"]), name
        assert accept and accept[0]["in"] == "header" and accept[0]["required"], name
        assert accept[0]["schema"]["enum"] == [HEADERS["Accept"]]


@pytest.mark.parametrize(
    ("operation", "statuses"),
    [
        ("GET /api/v1/public/ping", {"200", "413", "431", "503"}),
        ("POST /network/ports", {"201", "400", "409", "413", "503"}),
        ("POST /network/ports/bulk", {"201"}),
        ("POST /containers", {"201", "409"}),
        ("GET /network/ports/random", {"200", "404", "503"}),
        ("GET /network/ports/{ip}/{port}", {"404", "409"}),
        ("PUT /network/ports/{ip}/{port}/use", {"404", "409", "503"}),
        ("DELETE /network/ports/{ip}/{port}", {"404", "409", "503"}),
        ("POST /network/ports/claim", {"200", "409"}),
        ("GET /containers/{internal_id}", {"404"}),
    ],
)
def test_operations_document_the_statuses_they_answer(
    document: dict[str, Any], operation: str, statuses: set[str]
) -> None:
    method, path = operation.split()
    assert statuses <= set(document["paths"][path][method.lower()]["responses"])


def test_bounded_integers_use_standard_minimum_and_maximum(document: dict[str, Any]) -> None:
    for node in _walk(document):
        assert not {"ge", "le", "gt", "lt"} & set(node), node
    body = document["components"]["schemas"]["AddPort"]["properties"]["port"]
    assert (body["type"], body["minimum"], body["maximum"]) == ("integer", 1, 65535)
    assert all(
        isinstance(node[bound], int)
        for node in _walk(document)
        if node.get("type") == "integer"
        for bound in ("minimum", "maximum")
        if bound in node
    )
    [path_port] = [
        p for p in document["paths"]["/network/ports/{ip}/{port}"]["get"]["parameters"] if p["name"] == "port"
    ]
    assert (path_port["schema"]["minimum"], path_port["schema"]["maximum"]) == (1, 65535)
