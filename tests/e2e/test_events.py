"""The event stream (issue 13) end to end: ``GET /network/events`` of real `lightd serve` processes.

The stream is read with raw httpx streaming and parsed here, strictly to CONTRACT13's wire form:
a block is one comment line (``: connected``, ``: heartbeat``) or exactly ``id: <n>``,
``event: <type>``, ``data: <one-line JSON object>``, and blocks end with a blank line. A test
that expects no event for a change proves it by the next event it does expect: the stream is in
order, so an extra one would stand between them. No test asserts how fast anything happens.
"""

from __future__ import annotations

import calendar
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import HEADERS, TOKEN, VENDOR, write_test_config
from tests.e2e.daemon import ServedDaemon
from tests.ports import quiet_port

pytestmark = pytest.mark.slow

WILDCARD = "0.0.0.0"
DEADLINE = 30.0  # how long a test waits for what must happen (not a timing assertion)
AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
STREAM_ACCEPT = "text/event-stream"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
LEASE_FIELDS = ("id", "expires_at", "ttl")

Json = dict[str, Any]


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    data: Json


def parse_block(block: bytes) -> Event | str:
    """One block of the stream: a comment's text, or an event (its form checked)."""
    if block.startswith(b":"):
        assert b"\n" not in block, block
        return block[1:].decode().strip()
    lines = block.split(b"\n")
    assert len(lines) == 3, block
    id_line, event_line, data_line = lines
    assert id_line.startswith(b"id: ") and id_line[4:].isdigit(), block
    assert event_line.startswith(b"event: ") and event_line[7:], block
    assert data_line.startswith(b"data: "), block
    data = json.loads(data_line[6:])
    assert isinstance(data, dict), block
    return Event(int(id_line[4:]), event_line[7:].decode(), data)


class Stream:
    """One open ``GET /network/events``, read on demand."""

    def __init__(
        self,
        daemon: ServedDaemon,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        timeout: float = DEADLINE,
    ) -> None:
        self.client = httpx.Client(timeout=httpx.Timeout(timeout))
        request = self.client.build_request(
            "GET",
            daemon.url + "/network/events",
            headers=HEADERS if headers is None else headers,
            params=params,
        )
        self.response = self.client.send(request, stream=True)
        if self.response.status_code != 200:
            self.response.read()
            self.close()
            raise AssertionError(f"{self.response.status_code}: {self.response.text}")
        assert self.response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert self.response.headers["cache-control"] == "no-store"
        self.chunks = self.response.iter_bytes()
        self.buffer = b""
        self.comments: list[str] = []
        assert self.block() == b": connected", "the first bytes are a comment"

    def block(self) -> bytes | None:
        """The next block, or None when the daemon ended the stream."""
        while b"\n\n" not in self.buffer:
            try:
                self.buffer += next(self.chunks)
            except StopIteration:
                return None
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        return block

    def item(self) -> Event | str | None:
        block = self.block()
        return None if block is None else parse_block(block)

    def next_event(self) -> Event:
        while True:
            item = self.item()
            assert item is not None, "the stream ended"
            if isinstance(item, Event):
                return item
            self.comments.append(item)

    def take(self, count: int) -> list[Event]:
        return [self.next_event() for _ in range(count)]

    def until(self, last: Callable[[Event], bool]) -> list[Event]:
        """Events up to and with the first that ``last`` accepts."""
        taken = [self.next_event()]
        while not last(taken[-1]):
            taken.append(self.next_event())
        return taken

    def ended(self) -> bool:
        """Whether the daemon closes the stream (reading what is left on the way)."""
        try:
            while self.block() is not None:
                pass
        except httpx.HTTPError:
            pass  # closed without the end of its chunked body: closed all the same
        return True

    def close(self) -> None:
        self.response.close()
        self.client.close()


class Collector(threading.Thread):
    """Reads a stream in the background until ``last`` accepts an event or the stream ends."""

    def __init__(self, stream: Stream, last: Callable[[Event], bool]) -> None:
        super().__init__(daemon=True)
        self.stream, self.last = stream, last
        self.events: list[Event] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while True:
                event = self.stream.next_event()
                self.events.append(event)
                if self.last(event):
                    return
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self) -> list[Event]:
        self.join(DEADLINE)
        assert not self.is_alive(), f"the collector still waits after {len(self.events)} events"
        if self.error is not None:
            raise self.error
        return self.events


class Lightd:
    def __init__(self, daemon: ServedDaemon) -> None:
        self.daemon = daemon
        self.http = httpx.Client(base_url=daemon.url, headers=HEADERS, timeout=60)

    def call(self, method: str, path: str, expect: int | None = None, **kwargs: Any) -> Json:
        answer = self.http.request(method, path, **kwargs)
        if expect is not None:
            assert answer.status_code == expect, (method, path, answer.status_code, answer.text)
        else:
            assert answer.status_code < 300, (method, path, answer.status_code, answer.text)
        return dict(answer.json())

    def entry(self, port: int, ip: str = WILDCARD) -> Json:
        return self.call("GET", f"/network/ports/{ip}/{port}")

    def free_ports(self) -> list[int]:
        return [e["port"] for e in self.call("GET", "/network/ports?in_use=false")["ports"]]

    def stream(self, **kwargs: Any) -> Stream:
        return Stream(self.daemon, **kwargs)

    def use(self, port: int, in_use: bool) -> Json:
        return self.call("PUT", f"/network/ports/{WILDCARD}/{port}/use", json={"in_use": in_use})

    def restart(self) -> None:
        self.http.close()
        self.daemon.start()
        self.http = httpx.Client(base_url=self.daemon.url, headers=HEADERS, timeout=60)

    def gauge(self, name: str) -> float:
        scraped = httpx.get(self.daemon.url + "/metrics", headers=BEARER, timeout=30)
        assert scraped.status_code == 200, scraped.text
        for family in text_string_to_metric_families(scraped.text):
            for sample in family.samples:
                if sample.name == name and not sample.labels:
                    return float(sample.value)
        raise AssertionError(f"{name} is not on /metrics")


def config(folder: Path, **sections: dict[str, Any]) -> Path:
    pool = {"initial_ports": [], "host_check": False, **sections.pop("pool", {})}
    return write_test_config(folder, pool=pool, **sections)


@contextmanager
def served(folder: Path, **sections: dict[str, Any]) -> Iterator[Lightd]:
    daemon = ServedDaemon(config(folder, **sections))
    daemon.start()
    lightd = Lightd(daemon)
    try:
        yield lightd
    finally:
        lightd.http.close()
        daemon.stop()


@contextmanager
def opened(stream: Stream) -> Iterator[Stream]:
    try:
        yield stream
    finally:
        stream.close()


def add_ports(lightd: Lightd, ports: list[int] | list[str]) -> Json:
    return lightd.call(
        "POST", "/network/ports/bulk", expect=201, json={"ip": WILDCARD, "ports": ports, "protocol": "tcp"}
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


def increasing(events: list[Event]) -> bool:
    return all(a.id < b.id for a, b in zip(events, events[1:], strict=False))


def types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


def _sorted_entries(entries: list[Json]) -> list[Json]:
    return sorted(entries, key=lambda e: (e["ip"], e["port"], e["protocol"]))


def norm(data: Json) -> Json:
    """An event's data as the test compares it: without ``at``, entries in key order, a lease by
    its id, expiry and ttl, a container without its live engine state."""
    shaped: Json = {}
    for key, value in data.items():
        if key == "at":
            continue
        if key in ("ports", "freed") and isinstance(value, list):
            value = _sorted_entries(value)
        elif key == "lease" and isinstance(value, dict):
            value = {field: value.get(field) for field in LEASE_FIELDS}
        elif key == "container" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "engine_state"}
        shaped[key] = value
    return shaped


# -- every kind, in order ----------------------------------------------------------------------


def test_the_stream_delivers_every_kind_of_event_in_order_with_its_data(tmp_path: Path) -> None:
    with served(tmp_path) as lightd, opened(lightd.stream()) as stream:
        ports = sorted(quiet_port("tcp", WILDCARD) for _ in range(8))
        expected: list[tuple[str, Json]] = []

        lightd.call("POST", "/network/ports", expect=201, json={"ip": WILDCARD, "port": ports[0]})
        expected.append(("port.added", {"ports": [lightd.entry(ports[0])]}))
        add_ports(lightd, ports[1:])
        expected.append(("port.added", {"ports": [lightd.entry(p) for p in ports[1:]]}))
        assert add_ports(lightd, [ports[1]])["added_count"] == 0  # skipped everything: no event

        lightd.use(ports[0], True)
        expected.append(("port.used", {"ports": [lightd.entry(ports[0])]}))
        assert lightd.use(ports[0], True)["changed"] is False  # no event
        lightd.use(ports[0], False)
        expected.append(("port.freed", {"ports": [lightd.entry(ports[0])]}))

        plain = lightd.call("POST", "/network/ports/claim", json={"count": 1})
        expected.append(("ports.claimed", {"ports": plain["ports"], "lease": None}))
        first = lightd.call("POST", "/network/ports/claim", json={"count": 2, "ttl": 600})
        expected.append(("ports.claimed", first))
        lease_id = first["lease"]["id"]
        renewed = lightd.call("POST", f"/network/leases/{lease_id}/renew", json={"ttl": 900})
        expected.append(("lease.renewed", {"lease": renewed, "ports": renewed["ports"]}))
        released = lightd.call("DELETE", f"/network/leases/{lease_id}")
        expected.append(("lease.released", {"lease": renewed, "ports": released["freed"]}))

        second = lightd.call("POST", "/network/ports/claim", json={"count": 1, "ttl": 600})
        expected.append(("ports.claimed", second))
        kept = lightd.call("POST", f"/network/leases/{second['lease']['id']}/keep")
        expected.append(("lease.kept", {"lease": second["lease"], "ports": kept["kept"]}))

        short = lightd.call("POST", "/network/ports/claim", json={"count": 1, "ttl": 1})
        expected.append(("ports.claimed", short))
        [expiring] = [e["port"] for e in short["ports"]]
        wait_for("expiry", lambda: lightd.entry(expiring)["in_use"] is False)
        expected.append(("lease.expired", {"lease": short["lease"], "ports": [lightd.entry(expiring)]}))

        one, other = lightd.free_ports()[:2]
        binding = {"ip": WILDCARD, "port": one, "protocol": "tcp"}
        lightd.call(
            "POST",
            "/containers",
            expect=201,
            json={"internal_id": "mc-1", "image": "busybox", "ports": [binding]},
        )
        expected.append(
            (
                "container.created",
                {"container": lightd.call("GET", "/containers/mc-1"), "ports": [lightd.entry(one)]},
            )
        )
        lightd.call(
            "POST",
            "/containers/mc-1/rebind-network",
            json={"ports": [{"ip": WILDCARD, "port": other, "protocol": "tcp"}]},
        )
        expected.append(
            (
                "container.rebound",
                {
                    "container": lightd.call("GET", "/containers/mc-1"),
                    "ports": [lightd.entry(other)],
                    "freed": [lightd.entry(one)],
                },
            )
        )
        lightd.call("DELETE", "/containers/mc-1")
        expected.append(("container.deleted", {"internal_id": "mc-1", "freed": [lightd.entry(other)]}))

        was = lightd.entry(ports[0])
        lightd.call("DELETE", f"/network/ports/{WILDCARD}/{ports[0]}")
        expected.append(("port.deleted", {"ports": [was]}))
        gone = [p for p in lightd.free_ports() if p != ports[0]][:2]
        were = [lightd.entry(p) for p in gone]
        missing = {"ip": WILDCARD, "port": ports[0]}
        bulk = lightd.call(
            "POST",
            "/network/ports/bulk-delete",
            json={"ports": [*({"ip": WILDCARD, "port": p} for p in gone), missing]},
        )
        assert bulk["deleted_count"] == 2
        expected.append(("port.deleted", {"ports": were}))
        nothing = lightd.call("POST", "/network/ports/bulk-delete", json={"ports": [missing]})
        assert nothing["deleted_count"] == 0  # no event
        [marker, *_] = lightd.free_ports()
        lightd.use(marker, True)
        expected.append(("port.used", {"ports": [lightd.entry(marker)]}))

        events = stream.take(len(expected))
    assert types(events) == [kind for kind, _ in expected]
    assert increasing(events), [e.id for e in events]
    for event, (kind, data) in zip(events, expected, strict=True):
        assert AT.fullmatch(event.data.get("at", "")), event
        assert norm(event.data) == norm(data), (kind, event.data, data)
    # A lease in an event carries at least what the claim's answer shows of it.
    claimed = [e for e in events if e.type == "ports.claimed" and e.data["lease"] is not None]
    assert all(set(LEASE_FIELDS) <= set(e.data["lease"]) for e in claimed)


def test_a_bulk_change_of_1000_ports_is_one_event(tmp_path: Path) -> None:
    with served(tmp_path) as lightd, opened(lightd.stream()) as stream:
        assert add_ports(lightd, ["21000-21999"])["added_count"] == 1000
        deleted = lightd.call(
            "POST",
            "/network/ports/bulk-delete",
            json={"ports": [{"ip": WILDCARD, "port": p} for p in range(21000, 22000)]},
        )
        assert deleted["deleted_count"] == 1000
        add_ports(lightd, [22000])
        added, removed, marker = stream.take(3)
    assert types([added, removed, marker]) == ["port.added", "port.deleted", "port.added"]
    assert sorted(e["port"] for e in added.data["ports"]) == list(range(21000, 22000))
    assert sorted(e["port"] for e in removed.data["ports"]) == list(range(21000, 22000))
    assert [e["port"] for e in marker.data["ports"]] == [22000]


# -- repair findings, and the firewall where it can be run -------------------------------------


def test_a_new_repair_finding_is_one_event(tmp_path: Path) -> None:
    squat = quiet_port()
    pool = {
        "initial_ports": [{"ip": "127.0.0.1", "ports": str(squat), "protocol": "tcp"}],
        "host_check": True,
    }
    with served(tmp_path, pool=pool, repair={"interval": 0}) as lightd, opened(lightd.stream()) as stream:
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", squat))
            squatter.listen()
            report = lightd.call("POST", "/api/v1/repair")
            [finding] = [f for f in report["findings"] if f["type"] == "squatter"]
            again = lightd.call("POST", "/api/v1/repair")  # the same finding: not new, no event
            assert [f for f in again["findings"] if f["type"] == "squatter"] == [finding]
        lightd.call("POST", "/network/ports", expect=201, json={"ip": WILDCARD, "port": quiet_port()})
        found, marker = stream.take(2)
    assert types([found, marker]) == ["repair.finding", "port.added"]
    assert found.data["finding"] == finding and AT.fullmatch(found.data["at"])


def test_a_firewall_repair_that_changed_a_rule_is_one_event(tmp_path: Path, ns: Any) -> None:
    rule = ["-p", "tcp", "-m", "tcp", "--dport", "25566", "-m", "comment", "--comment", "lightd",
            "-j", "ACCEPT"]  # fmt: skip
    with (
        served(
            tmp_path,
            firewall={"enabled": True, "netns": ns.path},
            repair={"interval": 0},
            pool={"initial_ports": [{"ip": WILDCARD, "ports": "25565-25569", "protocol": "tcp"}]},
        ) as lightd,
        opened(lightd.stream()) as stream,
    ):
        ns.run("iptables", "-D", "LIGHTD", *rule)
        lightd.call("POST", "/api/v1/repair")
        lightd.call("POST", "/api/v1/repair")  # nothing left to repair: no event
        lightd.use(25565, True)
        repaired, marker = stream.take(2)
    assert types([repaired, marker]) == ["firewall.repaired", "port.used"]
    assert (repaired.data["added"], repaired.data["removed"]) == (1, 0)
    assert repaired.data["drift"] == ["missing rule for 0.0.0.0:25566/tcp"]


# -- reconnecting ------------------------------------------------------------------------------


def test_a_reconnect_with_last_event_id_or_after_misses_nothing(tmp_path: Path) -> None:
    with served(tmp_path) as lightd:
        ports = [quiet_port("tcp", WILDCARD) for _ in range(9)]
        with opened(lightd.stream()) as stream:
            add_ports(lightd, ports[0:1])
            add_ports(lightd, ports[1:2])
            seen = stream.take(1)[0]  # the second stays unread when this one goes
        for port in ports[2:5]:  # made while nobody listens
            add_ports(lightd, [port])

        def replay(**kwargs: Any) -> list[Event]:
            with opened(lightd.stream(**kwargs)) as again:
                add_ports(lightd, [ports.pop()])  # one live event after the backlog
                return again.until(lambda e: e.data["ports"][0]["port"] not in ports[:5])

        by_header = replay(headers={**HEADERS, "Last-Event-ID": str(seen.id)})
        by_query = replay(params={"after": str(seen.id)})
        both = replay(
            headers={**HEADERS, "Last-Event-ID": str(by_query[2].id)}, params={"after": str(seen.id)}
        )
    for got in (by_header, by_query):
        assert types(got) == ["port.added"] * 5 and increasing(got) and got[0].id > seen.id
        assert [e.data["ports"][0]["port"] for e in got[:4]] == ports[1:5]
        assert "reset" not in types(got)
    assert by_query[:4] == by_header[:4], "the backlog answers the same events"
    assert [e.id for e in both[:2]] == [by_query[3].id, by_header[4].id], "the header wins"


def test_a_reconnect_misses_nothing_across_a_restart(tmp_path: Path) -> None:
    with served(tmp_path) as lightd:
        ports = [quiet_port("tcp", WILDCARD) for _ in range(4)]
        stream = lightd.stream()
        with opened(stream):
            add_ports(lightd, ports[0:1])
            add_ports(lightd, ports[1:2])
            seen = stream.take(1)[0]
            # SIGTERM with a stream open: a clean exit (stop() kills and answers None after 15 s).
            assert lightd.daemon.stop() is not None, "the daemon did not stop with a stream open"
            assert "Application shutdown complete" in lightd.daemon.tail()
            assert stream.ended()
        lightd.restart()
        add_ports(lightd, ports[2:3])
        with opened(lightd.stream(headers={**HEADERS, "Last-Event-ID": str(seen.id)})) as again:
            add_ports(lightd, ports[3:4])
            got = again.take(3)
    assert types(got) == ["port.added"] * 3 and increasing(got) and got[0].id > seen.id
    assert [e.data["ports"][0]["port"] for e in got] == ports[1:4]


def test_a_lease_that_expired_while_down_is_an_event_after_the_restart(tmp_path: Path) -> None:
    with served(tmp_path) as lightd:
        add_ports(lightd, [quiet_port("tcp", WILDCARD), quiet_port("tcp", WILDCARD)])
        with opened(lightd.stream()) as stream:
            claimed = lightd.call("POST", "/network/ports/claim", json={"count": 1, "ttl": 1})
            [seen] = stream.take(1)
        assert seen.type == "ports.claimed"
        lightd.daemon.stop()
        expires = calendar.timegm(time.strptime(claimed["lease"]["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
        time.sleep(max(0.0, expires + 1.5 - time.time()))
        lightd.restart()
        with opened(lightd.stream(params={"after": str(seen.id)})) as again:
            expired = again.next_event()
    assert expired.type == "lease.expired" and expired.id > seen.id
    assert norm(expired.data)["lease"] == claimed["lease"]
    assert [e["port"] for e in expired.data["ports"]] == [e["port"] for e in claimed["ports"]]
    assert expired.data["ports"][0]["in_use"] is False


def test_an_id_too_old_or_above_the_last_gets_a_reset_first(tmp_path: Path) -> None:
    with served(tmp_path, events={"backlog": 100}) as lightd:
        [port] = [quiet_port("tcp", WILDCARD)]
        add_ports(lightd, [port])
        with opened(lightd.stream()) as live:
            for _ in range(65):  # 130 events, more than the backlog keeps
                lightd.use(port, True)
                lightd.use(port, False)
            made = live.take(130)
        assert increasing(made) and types(made) == ["port.used", "port.freed"] * 65
        last = made[-1].id

        start = made[0].id - 1  # the add's own event, made before the stream opened
        with opened(lightd.stream(params={"after": str(start)})) as old:
            reset = old.next_event()
            lightd.use(port, True)
            after_reset = old.next_event()
        assert reset.type == "reset" and reset.id == last
        assert set(reset.data) >= {"reason", "after", "oldest", "last"}, reset.data
        assert (reset.data["after"], reset.data["last"]) == (start, last)
        oldest = reset.data["oldest"]
        assert isinstance(reset.data["reason"], str) and reset.data["reason"]
        # At least the last 100 are kept; the first ones are not, hence the reset.
        assert made[0].id < oldest <= last and last - oldest + 1 >= 100, reset.data
        assert after_reset.type == "port.used" and after_reset.id > last
        last = after_reset.id

        # Just in the backlog: no reset, every event from the oldest kept.
        with opened(lightd.stream(params={"after": str(oldest - 1)})) as kept:
            replayed = kept.until(lambda e: e.id == last)
        assert "reset" not in types(replayed) and replayed[0].id == oldest and increasing(replayed)
        assert [e.id for e in replayed] == [e.id for e in made if e.id >= oldest] + [last]

        for above in (last + 5, 2**63 - 1):
            with opened(lightd.stream(headers={**HEADERS, "Last-Event-ID": str(above)})) as ahead:
                reset = ahead.next_event()
                lightd.use(port, False)
                lightd.use(port, True)
                live_after = ahead.take(2)
            assert reset.type == "reset" and reset.data["after"] == above, reset
            assert reset.id == reset.data["last"] == last, reset
            assert types(live_after) == ["port.freed", "port.used"] and live_after[0].id > last
            last = live_after[1].id

        # The last id itself: nothing missed, nothing to reset.
        with opened(lightd.stream(params={"after": str(last)})) as current:
            lightd.use(port, False)
            [fresh] = current.take(1)
        assert fresh.type == "port.freed" and fresh.id > last


# -- heartbeats, headers, bad input ------------------------------------------------------------


def test_an_idle_stream_gets_heartbeats(tmp_path: Path) -> None:
    with served(tmp_path, events={"heartbeat": 0.5}) as lightd, opened(lightd.stream(timeout=10)) as stream:
        beats = [stream.item() for _ in range(3)]
    assert beats == ["heartbeat"] * 3


def test_accept_and_token_rules(tmp_path: Path) -> None:
    with served(tmp_path) as lightd:
        for accept in (
            STREAM_ACCEPT,
            VENDOR,
            VENDOR.lower(),
            f"{STREAM_ACCEPT}, application/json",
            "application/json;q=0.5, text/event-stream",
        ):
            with opened(lightd.stream(headers={**BEARER, "Accept": accept})) as stream:
                add_ports(lightd, [quiet_port("tcp", WILDCARD)])
                assert stream.next_event().type == "port.added", accept

        def refused(headers: dict[str, str]) -> httpx.Response:
            return httpx.get(lightd.daemon.url + "/network/events", headers=headers, timeout=10)

        for accept in ("application/json", "text/plain", "*/*", "text/*"):
            answer = refused({**BEARER, "Accept": accept})
            assert answer.status_code == 406, (accept, answer.text)
            assert answer.headers["content-type"].startswith("application/json"), accept
            assert answer.json()["error"].startswith("Invalid vendor."), (accept, answer.text)
        for headers in (
            {"Accept": STREAM_ACCEPT},
            {"Accept": STREAM_ACCEPT, "Authorization": "Bearer x"},
            {"Accept": "application/json"},
        ):
            answer = refused(headers)
            assert answer.status_code == 401, (headers, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
            assert answer.json()["error"].startswith("Invalid or missing Bearer token")


BAD_IDS = [
    "-1",
    "abc",
    "1.5",
    "+1",
    " 1",
    "1 ",
    "0x10",
    "1e3",
    "",
    "9223372036854775808",
    "9" * 400,
    "\u0661",
]


def answer_of(url: str, **kwargs: Any) -> tuple[int, Any]:
    """The status and JSON body of a request that may open a stream (then: 200, None)."""
    with httpx.Client(timeout=10) as client, client.stream("GET", url, **kwargs) as answer:
        if answer.status_code == 200:
            return 200, None
        answer.read()
        return answer.status_code, answer.json()


def test_a_bad_after_or_last_event_id_is_400(tmp_path: Path) -> None:
    with served(tmp_path) as lightd:
        url = lightd.daemon.url + "/network/events"
        wrong = []
        for bad in BAD_IDS:
            tries = [("after", {"params": {"after": bad}, "headers": HEADERS})]
            # A value a header can carry as it is; an empty Last-Event-ID is no id (EventSource
            # never sends one: an empty last id means "none"), so it is not among these.
            if bad and bad.strip() == bad and bad.isascii():
                tries.append(("Last-Event-ID", {"headers": {**HEADERS, "Last-Event-ID": bad}}))
            for name, kwargs in tries:
                status, body = answer_of(url, **kwargs)
                if status != 400 or not isinstance(body, dict) or not isinstance(body.get("error"), str):
                    wrong.append((name, bad, status, body))
        assert wrong == []
        # Neither: only new events.
        add_ports(lightd, [quiet_port("tcp", WILDCARD)])
        with opened(lightd.stream()) as stream:
            add_ports(lightd, [port := quiet_port("tcp", WILDCARD)])
            event = stream.next_event()
        assert event.data["ports"][0]["port"] == port


# -- a subscriber that stops reading -----------------------------------------------------------


def stalled_subscriber(port: int) -> socket.socket:
    """A subscriber that sends its request and never reads (a receive buffer of a few KiB)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(DEADLINE)
    sock.connect(("127.0.0.1", port))
    head = (
        "GET /network/events HTTP/1.1\r\nHost: lightd\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in HEADERS.items())
        + "\r\n"
    )
    sock.sendall(head.encode())
    return sock


def closed_by_daemon(sock: socket.socket) -> bool:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            if sock.recv(1 << 20) == b"":
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def test_a_subscriber_that_stops_reading_is_dropped_and_the_others_get_everything(
    tmp_path: Path,
) -> None:
    # Heartbeats every 0.5 s: a connection closed by its client is found at the next write.
    with served(tmp_path, events={"client_timeout": 1, "heartbeat": 0.5}) as lightd:
        stalled = stalled_subscriber(lightd.daemon.port)
        try:
            active = lightd.stream()
            with opened(active):
                wait_for("two subscribers", lambda: lightd.gauge("lightd_event_subscribers") == 2)
                collector = Collector(active, lambda e: e.type == "port.used")
                collector.start()
                made = 0
                deadline = time.monotonic() + 120
                # Each event holds 1,000 entries (~100 KB): the stalled one's buffers fill fast.
                while lightd.gauge("lightd_event_subscribers") > 1:
                    assert time.monotonic() < deadline, "the stalled subscriber was never dropped"
                    for _ in range(5):
                        add_ports(lightd, ["23000-23999"])
                        lightd.call(
                            "POST",
                            "/network/ports/bulk-delete",
                            json={"ports": [{"ip": WILDCARD, "port": p} for p in range(23000, 24000)]},
                        )
                        made += 2
                assert lightd.gauge("lightd_event_subscribers") == 1, "the reader is kept"
                add_ports(lightd, [24000])
                lightd.use(24000, True)
                got = collector.result()
            assert closed_by_daemon(stalled), "the daemon closed the stalled connection"
        finally:
            stalled.close()
        wait_for("no subscriber", lambda: lightd.gauge("lightd_event_subscribers") == 0)
        # It may come back with Last-Event-ID: the daemon still serves streams.
        with opened(lightd.stream(params={"after": str(got[-2].id)})) as back:
            assert back.next_event() == got[-1]
    assert types(got) == ["port.added", "port.deleted"] * (made // 2) + ["port.added", "port.used"]
    assert increasing(got)
    assert all(len(e.data["ports"]) == 1000 for e in got[:made])
