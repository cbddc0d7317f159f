"""Strict input: every bad body, path, query or header is a short 4xx {"error"}, and nothing changed.

Through the real app on a real SQLite file (issue 10, findings 4, 6, 7, 8 and 9).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from lightd.api import create_app
from lightd.bootstrap import build
from lightd.config import load_or_create
from tests.conftest import HEADERS, TOKEN, VENDOR, db_rows

LONE = "\ud800"  # a lone UTF-16 surrogate: valid JSON text ("\ud800"), not valid Unicode
MANY_DIGITS = "9" * 5000  # past Python's 4300-digit limit for int()
LONG = "x" * 100_000


def raw(body: object) -> bytes:
    """The body as JSON text; json.dumps writes a lone surrogate as the escape \\ud800."""
    return json.dumps(body).encode()


def containers_rows(daemon) -> list[tuple]:
    with sqlite3.connect(daemon.store.path) as db:
        return sorted(db.execute("SELECT internal_id, body FROM containers"))


def state(daemon) -> tuple[list[tuple], list[tuple]]:
    return db_rows(daemon), containers_rows(daemon)


@asynccontextmanager
async def served(config_file: Path, fast_path: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """A daemon on ``config_file``, started and stopped here, so a test can restart it."""
    daemon = build(load_or_create(config_file))
    await daemon.start()
    try:
        # A 500 stays a response (as a served daemon's would), not an exception in the test.
        transport = httpx.ASGITransport(app=create_app(daemon, fast_path), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://lightd", headers=HEADERS) as http:
            http.daemon = daemon  # type: ignore[attr-defined]
            yield http
    finally:
        await daemon.stop()


def assert_refused(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    for word in words:
        assert word in body["error"], body


# --- finding 4: strings must be valid Unicode ---------------------------------------------------

CONTAINER = {
    "internal_id": "mc-1",
    "image": "localhost/busybox:latest",
    "ports": [{"ip": "0.0.0.0", "port": 25565}],
}

SURROGATE_BODIES = [
    ("POST", "/containers", {**CONTAINER, "env": {LONE: "x"}}, "env has a key"),
    ("POST", "/containers", {**CONTAINER, "env": {"EULA": LONE}}, "env.EULA"),
    ("POST", "/containers", {**CONTAINER, "startup_command": LONE}, "startup_command"),
    ("POST", "/containers", {**CONTAINER, "startup_command": ["sh", LONE]}, "startup_command[1]"),
    ("POST", "/containers", {**CONTAINER, "image": "busybox" + LONE}, "image"),
    ("POST", "/containers", {**CONTAINER, "internal_id": "mc" + LONE}, "internal_id"),
    ("POST", "/containers", {**CONTAINER, "ports": [{"ip": LONE, "port": 25565}]}, "ports[0].ip"),
    ("POST", "/network/ports", {"ip": "0.0.0.0", "port": 25600, "note": LONE}, "note"),
    ("POST", "/network/ports", {"ip": "0.0.0.0" + LONE, "port": 25600}, "ip"),
    ("POST", "/network/ports/bulk", {"ip": "0.0.0.0", "ports": [25600], "note": LONE}, "note"),
    ("POST", "/network/ports/claim", {"count": 1, "note": LONE}, "note"),
    ("POST", "/network/ports/claim", {"count": 1, "ip": LONE}, "ip"),
    ("PUT", "/network/ports/0.0.0.0/25566/use", {"in_use": True, "why": LONE}, "why"),
    (
        "POST",
        "/network/ports/bulk-delete",
        {"ports": [{"ip": "0.0.0.0", "port": 25566, "protocol": "tcp" + LONE}]},
        "ports[0].protocol",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), SURROGATE_BODIES)
async def test_a_lone_surrogate_anywhere_in_a_body_is_400_naming_the_field(
    client, daemon, method, path, body, field
):
    before, listed = state(daemon), (await client.get("/network/ports")).json()
    response = await client.request(method, path, content=raw(body))
    assert_refused(response, 400, field, "not valid Unicode")
    assert state(daemon) == before
    assert (await client.get("/network/ports")).json() == listed
    assert (await client.get("/containers")).json() == {"containers": []}


async def test_a_container_with_a_surrogate_in_env_is_refused_and_stays_gone_after_restart(
    config_file,
):
    async with served(config_file) as http:
        before = state(http.daemon)
        created = await http.post("/containers", content=raw({**CONTAINER, "env": {LONE: "x"}}))
        assert_refused(created, 400, "env has a key", "not valid Unicode")
        assert state(http.daemon) == before
        listed = await http.get("/containers")
        assert listed.status_code == 200 and listed.json()["containers"] == []
    async with served(config_file) as http:  # a restart from the same file
        listed = await http.get("/containers")
        assert listed.status_code == 200 and listed.json()["containers"] == []
        entry = (await http.get("/network/ports/0.0.0.0/25565")).json()
        assert entry["in_use"] is False and entry["container"] is None
        # The port is free for a real container, which then lists and rebinds as usual.
        assert (await http.post("/containers", json=CONTAINER)).status_code == 201
        rebound = await http.post(
            "/containers/mc-1/rebind-network", json={"ports": [{"ip": "0.0.0.0", "port": 25566}]}
        )
        assert rebound.status_code == 200, rebound.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"ip": "0.0.0.0", "port": 25600, "note": "\xed\xa0\x80"}', "not valid UTF-8"),
        (b'{"ip": "0.0.0.0", "port": 25600, "note": "caf\xe9"}', "not valid UTF-8"),
        (b'{"ip": "0.0.0.0", "port": NaN}', "NaN is not a JSON value"),
        (b'{"ip": "0.0.0.0", "port": ' + MANY_DIGITS.encode() + b"}", "port is a number of 5000"),
        (b"[" * 5000 + b"]" * 5000, "Request body"),
    ],
)
async def test_a_body_that_is_not_strict_json_is_400(client, daemon, content, message):
    before = state(daemon)
    assert_refused(await client.post("/network/ports", content=content), 400, message)
    assert state(daemon) == before


# --- finding 7: one strict parser for every number written as text ------------------------------

BAD_PORT_TEXTS = [
    "+25565",
    "%2025565",
    "25565%20",
    "025565",
    "00",
    "２５５６５",
    "٢٥٥٦٥",
    "25565.0",
    "0x63dd",
    "1_000",
    MANY_DIGITS,
    "-0",
]


@pytest.mark.parametrize("port", BAD_PORT_TEXTS)
async def test_a_path_port_that_is_not_plain_ascii_digits_is_400(client, daemon, port):
    before = state(daemon)
    for response in (
        await client.get(f"/network/ports/0.0.0.0/{port}"),
        await client.delete(f"/network/ports/0.0.0.0/{port}"),
        await client.put(f"/network/ports/0.0.0.0/{port}/use", json={"in_use": True}),
    ):
        assert_refused(response, 400, "port must be an integer from 1 to 65535")
        assert len(response.content) < 400
    assert state(daemon) == before


@pytest.mark.parametrize(
    "item",
    [
        "+25570",
        " 25570",
        "25570 ",
        "２５５７０",
        "٢٥٥٧٠",
        "025570",
        "25570-+25571",
        "25570 - 25571",
        "25570-٢٥٥٧١",
        MANY_DIGITS,
        f"1-{MANY_DIGITS}",
    ],
)
async def test_a_bulk_range_that_is_not_plain_ascii_digits_adds_nothing(client, daemon, item):
    before = state(daemon)
    response = await client.post("/network/ports/bulk", json={"ip": "0.0.0.0", "ports": [item]})
    assert_refused(response, 400, "ports[0] must be an integer from 1 to 65535 or a range")
    assert len(response.content) < 400
    assert state(daemon) == before


@pytest.mark.parametrize("value", [MANY_DIGITS, "+5", " 5", "٥", "-1", "1000000001", "05", "5.0"])
@pytest.mark.parametrize("name", ["limit", "offset"])
async def test_a_paging_number_that_is_not_plain_ascii_digits_in_bounds_is_400(client, name, value):
    response = await client.get("/network/ports", params={name: value})
    assert_refused(response, 400, f"{name} must be an integer from 0 to 1000000000")
    assert len(response.content) < 400


async def test_paging_takes_plain_numbers_up_to_its_bound(client):
    page = await client.get("/network/ports", params={"limit": "0", "offset": "1000000000"})
    assert page.status_code == 200 and page.json()["ports"] == []
    assert (await client.get("/network/ports?limit=2")).json()["total"] == 5


@pytest.mark.parametrize(
    "body",
    [
        {"count": 10**30},
        {"count": -(10**30)},
        {"count": 65536},
    ],
)
async def test_a_claim_count_out_of_bounds_claims_nothing(client, daemon, body):
    before = state(daemon)
    assert_refused(await client.post("/network/ports/claim", json=body), 400, "count must be")
    assert state(daemon) == before


@pytest.mark.parametrize("container_port", [0, 65536, 10**30, "80", True])
async def test_a_container_port_out_of_bounds_creates_nothing(client, daemon, container_port):
    before = state(daemon)
    body = {**CONTAINER, "ports": [{"container_port": container_port}]}
    assert_refused(await client.post("/containers", json=body), 400, "container_port must be")
    assert state(daemon) == before


# --- findings 6 and 7: ips are exactly an address, never an IPv4-mapped one -----------------------

MAPPED = [
    ("::ffff:127.0.0.1", "127.0.0.1"),
    ("::ffff:0.0.0.0", "0.0.0.0"),
    ("::ffff:7f00:1", "127.0.0.1"),
    ("0:0:0:0:0:ffff:a00:5", "10.0.0.5"),
]


@pytest.mark.parametrize(("ip", "ipv4"), MAPPED)
async def test_an_ipv4_mapped_ip_is_400_naming_the_ipv4_form_everywhere(client, daemon, ip, ipv4):
    before = state(daemon)
    responses = [
        await client.post("/network/ports", json={"ip": ip, "port": 25600}),
        await client.post("/network/ports/bulk", json={"ip": ip, "ports": ["25600-25601"]}),
        await client.post("/network/ports/claim", json={"ip": ip}),
        await client.post("/network/ports/bulk-delete", json={"ports": [{"ip": ip, "port": 25565}]}),
        await client.post("/containers", json={**CONTAINER, "ports": [{"ip": ip, "port": 25565}]}),
        await client.get(f"/network/ports/{ip}/25565"),
        await client.put(f"/network/ports/{ip}/25565/use", json={"in_use": True}),
        await client.delete(f"/network/ports/{ip}/25565"),
        await client.get("/network/ports/random", params={"ip": ip}),
        await client.get("/network/ports", params={"ip": ip}),
    ]
    for response in responses:
        assert_refused(response, 400, "IPv4-mapped", f"use its IPv4 form {ipv4}")
    assert state(daemon) == before


@pytest.mark.parametrize("ip", [" 0.0.0.0", "0.0.0.0 ", "0.0.0.0\n", "\t::", "10.0.0.5 "])
async def test_an_ip_with_spaces_is_400(client, daemon, ip):
    before = state(daemon)
    for response in (
        await client.post("/network/ports", json={"ip": ip, "port": 25600}),
        await client.post("/network/ports/bulk-delete", json={"ports": [{"ip": ip, "port": 25565}]}),
        await client.get("/network/ports", params={"ip": ip}),
    ):
        assert_refused(response, 400, "ip must not contain spaces")
    assert state(daemon) == before


# --- finding 7: errors quote at most about 100 characters of input ------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/network/ports", {"ip": LONG, "port": 25600}),
        ("POST", "/network/ports", {"ip": "0.0.0.0", "port": 25600, "protocol": LONG}),
        ("POST", "/network/ports/bulk", {"ip": "0.0.0.0", "ports": [LONG]}),
        ("POST", "/network/ports/bulk", {"ip": "0.0.0.0", "ports": "1-2", "protocol": LONG}),
        ("POST", "/containers", {**CONTAINER, "internal_id": LONG}),
        ("POST", "/containers", {**CONTAINER, "env": {LONG + "=": "x"}}),
        ("POST", "/containers", {**CONTAINER, "env": {LONG: LONE}}),
        ("GET", f"/network/ports/{LONG[:8000]}/25565", None),
        ("GET", f"/network/ports/0.0.0.0/{LONG[:8000]}", None),
        ("GET", f"/network/ports?protocol={LONG[:8000]}", None),
        ("GET", f"/network/ports?in_use={LONG[:8000]}", None),
        ("GET", f"/network/ports/random?ip={LONG[:8000]}", None),
        ("GET", f"/containers/{LONG[:8000]}", None),
    ],
)
async def test_an_error_quotes_at_most_about_100_characters_of_the_input(client, daemon, method, path, body):
    before = state(daemon)
    response = await client.request(method, path, content=None if body is None else raw(body))
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()) == {"error"}
    assert len(response.json()["error"]) < 300, response.json()
    assert state(daemon) == before


# --- finding 8: one error map for the fast path and the routes ----------------------------------


async def chunked(size: int) -> AsyncIterator[bytes]:
    yield b'{"count": 1, "note": "'
    for _ in range(size // 65536 + 1):
        yield b"x" * 65536
    yield b'"}'


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/network/ports/claim"),
        ("POST", "/network/ports"),
        ("POST", "/containers"),
        ("PUT", "/network/ports/0.0.0.0/25565/use"),
        ("POST", "/network/ports/bulk-delete"),
    ],
)
async def test_a_chunked_body_over_one_mib_is_413_on_every_route_and_entrance(
    config_file, method, path, fast_path
):
    async with served(config_file, fast_path) as http:
        before = state(http.daemon)
        response = await http.request(method, path, content=chunked(1024 * 1024))
        assert_refused(response, 413, "Request body is larger than 1 MiB")
        assert state(http.daemon) == before


@pytest.mark.parametrize("fast_path", [True, False])
async def test_an_unexpected_error_answers_alike_through_either_entrance(config_file, fast_path, monkeypatch):
    async with served(config_file, fast_path) as http:

        async def broken(*args, **kwargs):
            raise RuntimeError("a bug")

        monkeypatch.setattr(http.daemon.pool, "claim", broken)
        response = await http.post("/network/ports/claim", json={"count": 1})
        assert response.status_code == 500 and response.json() == {"error": "Internal error"}


# --- finding 9: headers -------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR", "Bearer"])
async def test_the_auth_scheme_is_case_insensitive(client, daemon, scheme):
    headers = {"Authorization": f"{scheme} {TOKEN}"}
    assert (await client.get("/network/ports/0.0.0.0/25565", headers=headers)).status_code == 200
    response = await client.post("/network/ports", json={"ip": "0.0.0.0", "port": 25600}, headers=headers)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "authorization",
    [
        f"bearer {TOKEN}x",
        f"bearer{TOKEN}",
        f"Basic {TOKEN}",
        TOKEN,
        f"bearer  {TOKEN[:-1]}",
        f"{TOKEN} bearer",
    ],
)
async def test_a_wrong_token_in_any_scheme_case_is_401_and_changes_nothing(client, daemon, authorization):
    before = state(daemon)
    response = await client.post(
        "/network/ports", json={"ip": "0.0.0.0", "port": 25600}, headers={"Authorization": authorization}
    )
    assert_refused(response, 401, "Invalid or missing Bearer token")
    assert response.headers["www-authenticate"] == "Bearer"
    assert state(daemon) == before


@pytest.mark.parametrize(
    "accept",
    [
        "xapplication/vnd.pkglatv1+jsonx",
        "application/vnd.pkglatv1+json;q=0",
        "application/vnd.pkglatv1+json; q=0.000",
        "application/vnd.pkglatv1+json;q=nope",
        "*/*",
        "application/*",
        "text/html, application/json",
        'text/html;foo="application/vnd.pkglatv1+json"',
    ],
)
async def test_an_accept_header_not_listing_the_vendor_type_is_406_and_changes_nothing(
    client, daemon, accept
):
    before = state(daemon)
    for response in (
        await client.post(
            "/network/ports", json={"ip": "0.0.0.0", "port": 25600}, headers={"Accept": accept}
        ),
        await client.post("/network/ports/claim", headers={"Accept": accept}),
        await client.get("/network/ports/random", headers={"Accept": accept}),
    ):
        assert_refused(response, 406, "Invalid vendor")
    assert state(daemon) == before


@pytest.mark.parametrize(
    "accept",
    [
        VENDOR,
        "application/vnd.pkglatv1+json",
        "text/html, APPLICATION/VND.PKGLATV1+JSON;q=0.5",
        "*/*;q=0.1 , application/vnd.pkglatv1+json ; charset=utf-8",
        'application/vnd.pkglatv1+json;x="a,b;c", text/plain',
    ],
)
async def test_an_accept_list_naming_the_vendor_type_is_accepted(client, accept):
    response = await client.get("/network/ports/random", headers={"Accept": accept})
    assert response.status_code == 200, response.text


async def test_several_accept_fields_make_one_list(client):
    # The vendor type first: a reader keeping only the last field would refuse this.
    headers = [("Authorization", f"Bearer {TOKEN}"), ("Accept", VENDOR), ("Accept", "text/html")]
    response = await client.get("/network/ports/0.0.0.0/25565", headers=httpx.Headers(headers))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-8"],
)
async def test_a_json_body_is_read_as_json_whatever_its_content_type(client, daemon, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    created = await client.post("/containers", content=raw(CONTAINER), headers=headers)
    assert created.status_code == 201, created.text
    added = await client.post("/network/ports", content=b'{"ip": "0.0.0.0", "port": 25600}', headers=headers)
    assert added.status_code == 201, added.text
    used = await client.put("/network/ports/0.0.0.0/25600/use", content=b'{"in_use": true}', headers=headers)
    assert used.status_code == 200 and used.json()["in_use"] is True, used.text
    claimed = await client.post("/network/ports/claim", content=b'{"count": 2}', headers=headers)
    assert claimed.status_code == 200 and len(claimed.json()["ports"]) == 2, claimed.text
    deleted = await client.post(
        "/network/ports/bulk-delete",
        headers=headers,
        content=b'{"ports": [{"ip": "0.0.0.0", "port": 25569}]}',
    )
    assert deleted.status_code == 200, deleted.text


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json"])
async def test_a_body_that_is_not_json_is_400_whatever_its_content_type(client, daemon, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    before = state(daemon)
    for method, path in (
        ("POST", "/network/ports"),
        ("POST", "/network/ports/claim"),
        ("PUT", "/network/ports/0.0.0.0/25565/use"),
    ):
        response = await client.request(method, path, content=b"ip=0.0.0.0&port=1", headers=headers)
        assert_refused(response, 400, "Request body is not valid JSON")
    assert state(daemon) == before
