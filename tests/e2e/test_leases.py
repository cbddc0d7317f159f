"""Leases (issue 13) end to end: claims with a ttl against real `lightd serve` processes.

The pool is a few ports from tests/ports.py on 0.0.0.0, the wildcard real servers use, with the
host check off so nothing here depends on what the host has bound. No test asserts how fast
something happens: an expiry is waited for (polling, up to a generous deadline), and what is
checked is what the daemon did and what it never did (free a lease early, forget a renew).
"""

from __future__ import annotations

import calendar
import math
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import HEADERS, write_test_config
from tests.e2e.daemon import ServedDaemon
from tests.ports import quiet_port

pytestmark = pytest.mark.slow

WILDCARD = "0.0.0.0"
LEASE_ID = re.compile(r"lease_[0-9a-f]{16}")
SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
DEADLINE = 30.0  # how long a test waits for what must happen (not a timing assertion)
ENTRY_KEYS = {"ip", "port", "protocol", "in_use", "container", "note", "lease"}
LEASE_KEYS = {"id", "expires_at", "ttl", "created_at", "ports"}
NOT_FOUND = {"error": "Lease not found"}

Json = dict[str, Any]


class Lightd:
    """A served daemon, the pool's ports, and one HTTP client with the two headers."""

    def __init__(self, daemon: ServedDaemon, ports: list[int]) -> None:
        self.daemon = daemon
        self.ports = ports
        self.http = httpx.Client(base_url=daemon.url, headers=HEADERS, timeout=30)

    def restart_client(self) -> None:
        self.http.close()
        self.http = httpx.Client(base_url=self.daemon.url, headers=HEADERS, timeout=30)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, path, **kwargs)

    def entry(self, port: int) -> Json:
        answer = self.call("GET", f"/network/ports/{WILDCARD}/{port}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def entries(self) -> dict[int, Json]:
        answer = self.call("GET", "/network/ports")
        assert answer.status_code == 200, answer.text
        return {e["port"]: e for e in answer.json()["ports"]}

    def leases(self) -> list[Json]:
        answer = self.call("GET", "/network/leases")
        assert answer.status_code == 200, answer.text
        assert set(answer.json()) == {"leases"}
        return list(answer.json()["leases"])

    def lease(self, lease_id: str) -> Json:
        answer = self.call("GET", f"/network/leases/{lease_id}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def claim(self, **body: Any) -> Json:
        before = time.time()
        answer = self.call("POST", "/network/ports/claim", json=body)
        after = time.time()
        assert answer.status_code == 200, answer.text
        claimed = dict(answer.json())
        if "ttl" in body:
            check_expiry(claimed["lease"]["expires_at"], body["ttl"], before, after)
        return claimed

    def log(self) -> str:
        return self.daemon.log.read_text(errors="replace")

    def metric(self, name: str) -> float:
        scraped = httpx.get(
            self.daemon.url + "/metrics", headers={"Authorization": HEADERS["Authorization"]}, timeout=30
        )
        assert scraped.status_code == 200, scraped.text
        for family in text_string_to_metric_families(scraped.text):
            for sample in family.samples:
                if sample.name == name and not sample.labels:
                    return float(sample.value)
        raise AssertionError(f"{name} is not on /metrics")


def epoch(stamp: str) -> int:
    """``2026-12-02T08:00:05Z`` as epoch seconds (the form is checked too)."""
    assert SECONDS.fullmatch(stamp), stamp
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))


def check_expiry(expires_at: str, ttl: int, before: float, after: float) -> None:
    """expiry = ceil(now) + ttl, for some now between ``before`` and ``after`` (this host's clock)."""
    assert math.ceil(before) + ttl <= epoch(expires_at) <= math.ceil(after) + ttl, (
        expires_at,
        ttl,
        before,
        after,
    )


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {DEADLINE:g} s")
        time.sleep(0.05)


def sleep_past(expires_at: str, margin: float = 1.2) -> None:
    """Until this host's clock is ``margin`` seconds past ``expires_at``."""
    time.sleep(max(0.0, epoch(expires_at) + margin - time.time()))


def pool_config(folder: Path, **sections: dict[str, Any]) -> Path:
    return write_test_config(folder, pool={"initial_ports": [], "host_check": False}, **sections)


def served(folder: Path, count: int) -> Lightd:
    daemon = ServedDaemon(pool_config(folder))
    daemon.start()
    ports = sorted(quiet_port("tcp", WILDCARD) for _ in range(count))
    lightd = Lightd(daemon, ports)
    added = lightd.call(
        "POST", "/network/ports/bulk", json={"ip": WILDCARD, "ports": ports, "protocol": "tcp"}
    )
    assert added.status_code == 201 and added.json()["added_count"] == count, added.text
    return lightd


@pytest.fixture
def lightd(tmp_path: Path) -> Iterator[Lightd]:
    served_daemon = served(tmp_path, 4)
    yield served_daemon
    served_daemon.http.close()
    served_daemon.daemon.stop()


def held(entry: Json, lease_id: str) -> bool:
    return entry["in_use"] is True and entry["container"] is None and entry["lease"] == lease_id


def free(entry: Json) -> bool:
    return entry["in_use"] is False and entry["container"] is None and entry["lease"] is None


def ports_of(entries: list[Json]) -> list[int]:
    return sorted(e["port"] for e in entries)


# -- claim, list, get --------------------------------------------------------------------------


def test_a_claim_with_a_ttl_answers_its_lease_and_the_entries_name_it(lightd: Lightd) -> None:
    claimed = lightd.claim(count=2, ttl=600)
    assert set(claimed) == {"ports", "lease"}
    lease = claimed["lease"]
    assert set(lease) == {"id", "expires_at", "ttl"} and lease["ttl"] == 600
    assert LEASE_ID.fullmatch(lease["id"]), lease
    assert len(claimed["ports"]) == 2
    for entry in claimed["ports"]:
        assert set(entry) == ENTRY_KEYS and held(entry, lease["id"]), entry
        assert lightd.entry(entry["port"]) == entry
    listed = lightd.entries()
    assert [p for p in lightd.ports if held(listed[p], lease["id"])] == ports_of(claimed["ports"])

    [shown] = lightd.leases()
    assert set(shown) == LEASE_KEYS
    assert {k: shown[k] for k in ("id", "expires_at", "ttl")} == lease
    assert epoch(shown["created_at"]) <= epoch(lease["expires_at"]) - 600
    assert shown["ports"] == sorted(claimed["ports"], key=lambda e: e["port"])
    assert lightd.lease(lease["id"]) == shown

    # Without a ttl the answer is the one it always was: the operator holds the entries.
    plain = lightd.claim(count=1)
    assert set(plain) == {"ports"}
    [entry] = plain["ports"]
    assert entry["in_use"] is True and entry["lease"] is None and entry["container"] is None
    assert [e["id"] for e in lightd.leases()] == [lease["id"]]


def test_leases_are_listed_by_expiry_then_id(lightd: Lightd) -> None:
    late = lightd.claim(ttl=900)["lease"]["id"]
    soon = [lightd.claim(ttl=300)["lease"]["id"] for _ in range(2)]
    shown = lightd.leases()
    assert [s["id"] for s in shown][-1] == late
    assert shown == sorted(shown, key=lambda s: (s["expires_at"], s["id"]))
    assert {s["id"] for s in shown} == {late, *soon}
    assert len({s["id"] for s in shown}) == 3, "every claim has a lease of its own"


# -- expiry ------------------------------------------------------------------------------------


def test_a_lease_expires_and_frees_its_ports(lightd: Lightd) -> None:
    assert lightd.metric("lightd_leases_expired_total") == 0
    claimed = lightd.claim(count=2, ttl=1)
    lease_id, expires_at = claimed["lease"]["id"], claimed["lease"]["expires_at"]
    mine = ports_of(claimed["ports"])

    def freed() -> bool:
        listed = lightd.entries()  # one answer: one moment of the pool
        seen_at = time.time()
        entries = [listed[port] for port in mine]
        if all(free(e) for e in entries):
            # Never before its time: the answer came after the daemon freed them.
            assert seen_at >= epoch(expires_at), (seen_at, expires_at)
            return True
        assert all(held(e, lease_id) for e in entries), entries  # all or nothing
        return False

    wait_for("expiry", freed)
    assert lightd.call("GET", f"/network/leases/{lease_id}").json() == NOT_FOUND
    assert lightd.leases() == []
    assert re.search(rf"lease {lease_id} expired: freed 2 ports \(", lightd.log()), lightd.daemon.tail()
    assert lightd.metric("lightd_leases_expired_total") == 1
    # Free for anyone again: a claim of the whole pool gets them.
    again = lightd.claim(count=len(lightd.ports))
    assert ports_of(again["ports"]) == lightd.ports


def test_renew_moves_the_expiry_and_the_lease_outlives_its_first(lightd: Lightd) -> None:
    claimed = lightd.claim(count=2, ttl=2)
    lease_id, first = claimed["lease"]["id"], claimed["lease"]["expires_at"]

    before = time.time()
    renewed = lightd.call("POST", f"/network/leases/{lease_id}/renew", json={"ttl": 30})
    after = time.time()
    assert renewed.status_code == 200, renewed.text
    body = renewed.json()
    assert set(body) == LEASE_KEYS and body["id"] == lease_id and body["ttl"] == 30
    check_expiry(body["expires_at"], 30, before, after)
    assert ports_of(body["ports"]) == ports_of(claimed["ports"])
    assert lightd.lease(lease_id) == body

    sleep_past(first, margin=2.0)
    assert lightd.lease(lease_id) == body, "renewed: still there past its first expiry"
    assert all(held(lightd.entry(p), lease_id) for p in ports_of(claimed["ports"]))
    assert f"lease {lease_id} expired" not in lightd.log()

    # No body, and {}: the lease's own ttl (30 now), counted from now.
    for kwargs in ({}, {"json": {}}):
        before = time.time()
        again = lightd.call("POST", f"/network/leases/{lease_id}/renew", **kwargs)
        after = time.time()
        assert again.status_code == 200, (kwargs, again.text)
        assert again.json()["ttl"] == 30
        check_expiry(again.json()["expires_at"], 30, before, after)
    assert lightd.metric("lightd_leases_expired_total") == 0


# -- release and keep --------------------------------------------------------------------------


def test_release_frees_the_entries_and_ends_the_lease(lightd: Lightd) -> None:
    claimed = lightd.claim(count=2, ttl=600)
    lease_id = claimed["lease"]["id"]
    released = lightd.call("DELETE", f"/network/leases/{lease_id}")
    assert released.status_code == 200, released.text
    body = released.json()
    assert set(body) == {"message", "freed"} and body["message"] == "Lease released"
    assert ports_of(body["freed"]) == ports_of(claimed["ports"])
    for entry in body["freed"]:
        assert set(entry) == ENTRY_KEYS and free(entry), entry
        assert lightd.entry(entry["port"]) == entry
    assert lightd.leases() == []
    for method, path in (("GET", ""), ("DELETE", ""), ("POST", "/renew"), ("POST", "/keep")):
        answer = lightd.call(method, f"/network/leases/{lease_id}{path}")
        assert (answer.status_code, answer.json()) == (404, NOT_FOUND), (method, path)


def test_keep_hands_the_entries_to_the_operator_with_no_expiry(lightd: Lightd) -> None:
    claimed = lightd.claim(count=2, ttl=1)
    lease_id, expires_at = claimed["lease"]["id"], claimed["lease"]["expires_at"]
    kept = lightd.call("POST", f"/network/leases/{lease_id}/keep")
    assert kept.status_code == 200, kept.text
    body = kept.json()
    assert set(body) == {"message", "kept"} and body["message"] == "Lease kept"
    assert ports_of(body["kept"]) == ports_of(claimed["ports"])
    for entry in body["kept"]:
        assert entry["in_use"] is True and entry["lease"] is None and entry["container"] is None
    assert lightd.call("GET", f"/network/leases/{lease_id}").status_code == 404

    sleep_past(expires_at, margin=2.0)  # past the lease's expiry: nothing expires
    for port in ports_of(claimed["ports"]):
        entry = lightd.entry(port)
        assert entry["in_use"] is True and entry["lease"] is None, entry
    assert lightd.leases() == [] and f"lease {lease_id} expired" not in lightd.log()
    # The operator's now: use false frees them.
    for port in ports_of(claimed["ports"]):
        freed = lightd.call("PUT", f"/network/ports/{WILDCARD}/{port}/use", json={"in_use": False})
        assert freed.status_code == 200 and freed.json()["changed"] is True, freed.text


# -- across restarts ---------------------------------------------------------------------------


def test_a_lease_that_expired_while_the_daemon_was_down_is_freed_at_start_up(tmp_path: Path) -> None:
    lightd = served(tmp_path, 4)
    try:
        short = lightd.claim(count=2, ttl=2)
        long = lightd.claim(count=1, ttl=3600)
        lightd.daemon.stop()
        sleep_past(short["lease"]["expires_at"], margin=1.5)
        lightd.daemon.start()
        lightd.restart_client()
        first = lightd.entries()  # the very first answer after the start
        for port in ports_of(short["ports"]):
            assert free(first[port]), first[port]
        [kept] = ports_of(long["ports"])
        assert held(first[kept], long["lease"]["id"])
        assert lightd.call("GET", f"/network/leases/{short['lease']['id']}").json() == NOT_FOUND
        [left] = lightd.leases()
        assert left["id"] == long["lease"]["id"]
        assert left["expires_at"] == long["lease"]["expires_at"]
        assert re.search(rf"lease {short['lease']['id']} expired: freed 2 ports", lightd.log())
    finally:
        lightd.http.close()
        lightd.daemon.stop()


def test_a_lease_renewed_just_before_a_crash_keeps_its_new_expiry(tmp_path: Path) -> None:
    lightd = served(tmp_path, 3)
    try:
        claimed = lightd.claim(count=2, ttl=2)
        lease_id = claimed["lease"]["id"]
        renewed = lightd.call("POST", f"/network/leases/{lease_id}/renew", json={"ttl": 3600})
        assert renewed.status_code == 200, renewed.text
        lightd.daemon.kill()  # SIGKILL right after the answer
        sleep_past(claimed["lease"]["expires_at"], margin=1.5)  # past the expiry it had before
        lightd.daemon.start()
        lightd.restart_client()
        shown = lightd.lease(lease_id)
        assert shown["expires_at"] == renewed.json()["expires_at"] and shown["ttl"] == 3600
        assert ports_of(shown["ports"]) == ports_of(claimed["ports"])
        for port in ports_of(claimed["ports"]):
            assert held(lightd.entry(port), lease_id)
        assert f"lease {lease_id} expired" not in lightd.log()
    finally:
        lightd.http.close()
        lightd.daemon.stop()


# -- containers --------------------------------------------------------------------------------


def create_container(lightd: Lightd, name: str, ports: list[int]) -> httpx.Response:
    return lightd.call(
        "POST",
        "/containers",
        json={
            "internal_id": name,
            "image": "busybox",
            "ports": [{"ip": WILDCARD, "port": p, "protocol": "tcp"} for p in ports],
        },
    )


def test_a_container_takes_over_leased_entries_and_the_lease_keeps_the_others(lightd: Lightd) -> None:
    claimed = lightd.claim(count=3, ttl=600)
    lease_id = claimed["lease"]["id"]
    taken, rest = ports_of(claimed["ports"])[:2], ports_of(claimed["ports"])[2:]
    [outside] = sorted(set(lightd.ports) - set(ports_of(claimed["ports"])))

    created = create_container(lightd, "mc-1", taken)
    assert created.status_code == 201, created.text
    for port in taken:
        entry = lightd.entry(port)
        assert (entry["in_use"], entry["container"], entry["lease"]) == (True, "mc-1", None), entry
    shown = lightd.lease(lease_id)
    assert ports_of(shown["ports"]) == rest and shown["expires_at"] == claimed["lease"]["expires_at"]

    # All or nothing: with a port the operator holds, the create fails and the lease keeps its own.
    marked = lightd.call("PUT", f"/network/ports/{WILDCARD}/{outside}/use", json={"in_use": True})
    assert marked.status_code == 200, marked.text
    refused = create_container(lightd, "mc-2", [*rest, outside])
    assert refused.status_code == 409, refused.text
    assert lightd.lease(lease_id) == shown
    assert all(held(lightd.entry(p), lease_id) for p in rest)
    assert lightd.call("GET", "/containers/mc-2").status_code == 404

    # Its last entry taken, the lease is gone.
    assert create_container(lightd, "mc-2", rest).status_code == 201
    assert lightd.call("GET", f"/network/leases/{lease_id}").json() == NOT_FOUND
    assert lightd.leases() == []
    assert lightd.entry(rest[0])["container"] == "mc-2"

    # Deleting the container frees its ports; they do not go back to any lease.
    assert lightd.call("DELETE", "/containers/mc-1").status_code == 200
    assert all(free(lightd.entry(p)) for p in taken)


def test_a_lease_that_expires_after_a_takeover_frees_only_what_it_still_holds(lightd: Lightd) -> None:
    claimed = lightd.claim(count=2, ttl=2)
    lease_id = claimed["lease"]["id"]
    taken, rest = ports_of(claimed["ports"])
    assert create_container(lightd, "mc-1", [taken]).status_code == 201
    wait_for("expiry", lambda: free(lightd.entry(rest)))
    entry = lightd.entry(taken)
    assert (entry["in_use"], entry["container"], entry["lease"]) == (True, "mc-1", None)
    assert re.search(rf"lease {lease_id} expired: freed 1 ports? \(", lightd.log()), lightd.daemon.tail()

    lightd.daemon.stop()  # and the file says the same
    lightd.daemon.start()
    lightd.restart_client()
    assert lightd.entry(taken)["container"] == "mc-1" and free(lightd.entry(rest))


# -- held like any other -----------------------------------------------------------------------


def test_random_and_claim_never_hand_out_leased_entries(lightd: Lightd) -> None:
    claimed = lightd.claim(count=3, ttl=600)
    [left] = sorted(set(lightd.ports) - set(ports_of(claimed["ports"])))
    for _ in range(40):
        picked = lightd.call("GET", "/network/ports/random")
        assert picked.status_code == 200 and picked.json()["port"] == left, picked.text
    got = lightd.claim(count=1)
    assert ports_of(got["ports"]) == [left]
    for body in ({"count": 1}, {"count": 1, "ttl": 60}):
        refused = lightd.call("POST", "/network/ports/claim", json=body)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "No available ports in pool"
    assert lightd.call("GET", "/network/ports/random").status_code == 404
    [only] = lightd.leases()
    assert only["id"] == claimed["lease"]["id"] and len(only["ports"]) == 3


def test_use_false_delete_and_bulk_delete_leave_leased_entries_alone(lightd: Lightd) -> None:
    claimed = lightd.claim(count=2, ttl=600)
    lease_id = claimed["lease"]["id"]
    mine = ports_of(claimed["ports"])
    [spare, *_] = sorted(set(lightd.ports) - set(mine))
    before = lightd.lease(lease_id)

    for method, suffix, kwargs in (("PUT", "/use", {"json": {"in_use": False}}), ("DELETE", "", {})):
        refused = lightd.call(method, f"/network/ports/{WILDCARD}/{mine[0]}{suffix}", **kwargs)
        assert refused.status_code == 409, (method, refused.text)
        body = refused.json()
        assert isinstance(body["error"], str) and lease_id in body["error"], body
        assert "release" in body["error"] or "/network/leases" in body["error"], body
        assert body["held_by"] == {"kind": "lease", "name": lease_id}, body

    marked = lightd.call("PUT", f"/network/ports/{WILDCARD}/{mine[0]}/use", json={"in_use": True})
    assert marked.status_code == 200, marked.text
    assert marked.json()["changed"] is False and marked.json()["in_use"] is True

    bulk = lightd.call(
        "POST",
        "/network/ports/bulk-delete",
        json={"ports": [{"ip": WILDCARD, "port": p} for p in [*mine, spare]]},
    )
    assert bulk.status_code == 200, bulk.text
    assert bulk.json()["deleted_count"] == 1
    skipped = bulk.json()["skipped"]
    assert ports_of(skipped) == mine
    assert all(s["reason"] == f"held by lease {lease_id}" for s in skipped), skipped
    assert spare not in lightd.entries()
    assert lightd.lease(lease_id) == before, "nothing changed the lease"


# -- bad input ---------------------------------------------------------------------------------

BAD_TTLS: dict[str, bytes] = {
    "zero": b"0",
    "above a day": b"86401",
    "negative": b"-1",
    "a float": b"1.5",
    "a whole float": b"60.0",
    "an exponent": b"6e1",
    "a string": b'"60"',
    "true": b"true",
    "5000 digits": b"9" * 5000,
    "an object": b'{"seconds": 60}',
    "a nested object": b'{"a": {"b": {"c": [60]}}}',
    "a list": b"[60]",
}


def refused_400(answer: httpx.Response, field: str | None = None) -> bool:
    """A 400 whose JSON body is ``{"error": <str>, ...}`` (naming ``field``)."""
    if answer.status_code != 400:
        return False
    body = answer.json()
    return (
        isinstance(body, dict)
        and isinstance(body.get("error"), str)
        and (field is None or field in body["error"])
    )


def test_bad_ttls_are_refused_and_claim_nothing(lightd: Lightd) -> None:
    wrong = []
    for case, raw in BAD_TTLS.items():
        answer = lightd.call(
            "POST",
            "/network/ports/claim",
            content=b'{"count": 1, "ttl": ' + raw + b"}",
            headers={"Content-Type": "application/json"},
        )
        if not refused_400(answer, "ttl"):
            wrong.append((case, answer.status_code, answer.text[:300]))
    assert wrong == []
    assert lightd.leases() == []
    assert all(free(e) for e in lightd.entries().values())


def test_bad_ttls_on_renew_change_nothing(lightd: Lightd) -> None:
    claimed = lightd.claim(count=1, ttl=600)
    lease_id = claimed["lease"]["id"]
    before = lightd.lease(lease_id)
    bodies = {
        **{case: b'{"ttl": ' + raw + b"}" for case, raw in BAD_TTLS.items()},
        "not JSON": b"{ttl",
        "a list body": b"[]",
        "a string body": b'"x"',
    }
    wrong = []
    for case, raw in bodies.items():
        answer = lightd.call(
            "POST",
            f"/network/leases/{lease_id}/renew",
            content=raw,
            headers={"Content-Type": "application/json"},
        )
        if not refused_400(answer):
            wrong.append((case, answer.status_code, answer.text[:300]))
    assert wrong == []
    assert lightd.lease(lease_id) == before


def test_a_ttl_of_null_is_the_same_as_none_given(lightd: Lightd) -> None:
    """As for every optional field of the API (ip, note): null means "not given", so a claim
    with ``"ttl": null`` is held by the operator, and a renew with it keeps the lease's own ttl."""
    plain = lightd.call("POST", "/network/ports/claim", json={"count": 1, "ttl": None})
    assert plain.status_code == 200 and "lease" not in plain.json(), plain.text
    [entry] = plain.json()["ports"]
    assert entry["in_use"] is True and entry["lease"] is None
    claimed = lightd.claim(count=1, ttl=600)
    lease_id = claimed["lease"]["id"]
    renewed = lightd.call("POST", f"/network/leases/{lease_id}/renew", json={"ttl": None})
    assert renewed.status_code == 200 and renewed.json()["ttl"] == 600, renewed.text


def test_an_unknown_lease_is_404_for_every_route_and_changes_nothing(lightd: Lightd) -> None:
    claimed = lightd.claim(count=1, ttl=600)
    before = lightd.leases()
    unknown = [
        "lease_0123456789abcdef",
        "lease_" + "f" * 16,
        "nope",
        "LEASE_0123456789ABCDEF",
        claimed["lease"]["id"] + "0",
    ]
    for lease_id in unknown:
        for method, suffix, kwargs in (
            ("GET", "", {}),
            ("POST", "/renew", {"json": {"ttl": 60}}),
            ("POST", "/renew", {}),
            ("DELETE", "", {}),
            ("POST", "/keep", {}),
        ):
            answer = lightd.call(method, f"/network/leases/{lease_id}{suffix}", **kwargs)
            assert answer.status_code == 404, (lease_id, method, suffix, answer.text)
            assert answer.json() == NOT_FOUND, (lease_id, method, suffix, answer.text)
    assert lightd.leases() == before
