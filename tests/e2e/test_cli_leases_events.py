"""The client's and the CLI's leases and event stream (issue 13), against a real `lightd serve`.

The pool is a few quiet ports (tests/ports.py) on 127.0.0.1 with the host check off; the CLI runs
as `lightd ... --config <the daemon's config>`, so it finds the daemon and its token as an
operator's would. Nothing here asserts how fast anything happens: what is waited for is waited
for up to a generous deadline, and what is checked is what arrived and what never did.
"""

from __future__ import annotations

import calendar
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lightd.client import Client, ClientError, Event
from tests.conftest import TOKEN, write_test_config
from tests.e2e.daemon import ServedDaemon
from tests.ports import quiet_port

pytestmark = pytest.mark.slow

LIGHTD = str(Path(sys.executable).with_name("lightd"))
IP = "127.0.0.1"
LEASE_ID = re.compile(r"lease_[0-9a-f]{16}")
SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
MILLISECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
DEADLINE = 30.0  # how long a test waits for what must happen (not a timing assertion)
TTL_ERROR = "ttl must be an integer from 1 to 86400 (seconds)"
UNKNOWN = "lease_0123456789abcdef"

Json = dict[str, Any]


class Served:
    """A `lightd serve` whose config names its port (so --config finds it), and its pool."""

    def __init__(self, folder: Path, count: int) -> None:
        self.ports = sorted(quiet_port("tcp", IP) for _ in range(count))
        port = quiet_port()
        self.config = write_test_config(
            folder,
            api={"port": port},
            pool={"initial_ports": [{"ip": IP, "ports": self.ports, "protocol": "tcp"}], "host_check": False},
            repair={"interval": 0},  # no pass of its own: no repair event among the test's
        )
        self.daemon = ServedDaemon(self.config, port=port)
        self.daemon.start()

    def client(self) -> Client:
        return Client(self.daemon.url, TOKEN, timeout=30)

    def lightd(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([LIGHTD, *args, "--config", str(self.config)], **self._run(token), timeout=60)

    def follow(self, *args: str, token: str | None = None) -> CliFollower:
        """`lightd events ARGS` running in the background, its lines read as they come."""
        return CliFollower(
            subprocess.Popen([LIGHTD, "events", *args, "--config", str(self.config)], **self._run(token))
        )

    def _run(self, token: str | None) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if k not in ("LIGHTD_TOKEN", "LIGHTD_CONFIG")}
        if token is not None:  # with --url only: the config's token is used otherwise
            env["LIGHTD_TOKEN"] = token
        return {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    lightd = Served(tmp_path, 6)
    yield lightd
    lightd.daemon.stop()


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {DEADLINE:g} s")
        time.sleep(0.05)


def epoch(stamp: str) -> int:
    assert SECONDS.fullmatch(stamp), stamp
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))


def entries(client: Client) -> dict[int, Json]:
    return {e["port"]: e for e in client.list_ports()}


def keys(ports: list[Json]) -> list[tuple[str, int, str]]:
    return sorted((e["ip"], e["port"], e["protocol"]) for e in ports)


# -- the client: claim with a ttl, renew, release, keep -----------------------------------------


def test_client_leases(served: Served) -> None:
    with served.client() as client:
        before = time.time()
        answer = client.claim_lease(2, ip=IP, ttl=60)
        after = time.time()
        assert set(answer) == {"ports", "lease"}
        lease = answer["lease"]
        assert set(lease) == {"id", "expires_at", "ttl"} and lease["ttl"] == 60
        assert LEASE_ID.fullmatch(lease["id"]), lease
        assert int(before) + 60 <= epoch(lease["expires_at"]) <= int(after) + 61
        assert all(
            e["lease"] == lease["id"] and e["in_use"] and e["container"] is None for e in answer["ports"]
        )

        [other] = client.claim(ttl=600)  # claim's own answer: the entries, each naming its lease
        assert other["in_use"] is True and LEASE_ID.fullmatch(other["lease"])
        assert other["lease"] != lease["id"]
        [plain] = client.claim()
        assert plain["in_use"] is True and plain["lease"] is None

        listed = client.leases()
        assert [item["id"] for item in listed] == [lease["id"], other["lease"]]  # soonest first
        shown = client.lease(lease["id"])
        assert set(shown) == {"id", "expires_at", "ttl", "created_at", "ports"}
        assert shown == listed[0]
        assert keys(shown["ports"]) == keys(answer["ports"])

        # Renew without a ttl: the lease's own; with one: that many seconds from now.
        before = time.time()
        renewed = client.renew(lease["id"])
        after = time.time()
        assert renewed["id"] == lease["id"] and renewed["ttl"] == 60
        assert int(before) + 60 <= epoch(renewed["expires_at"]) <= int(after) + 61
        renewed = client.renew(lease["id"], ttl=3600)
        assert renewed["ttl"] == 3600 and epoch(renewed["expires_at"]) >= int(after) + 3600
        assert client.lease(lease["id"]) == renewed

        # Bad input changes nothing.
        pool = entries(client)
        for bad in (0, 86401, -5):
            with pytest.raises(ClientError) as error:
                client.renew(lease["id"], ttl=bad)
            assert error.value.status == 400 and error.value.message.startswith(TTL_ERROR)
            with pytest.raises(ClientError) as error:
                client.claim(ttl=bad)
            assert error.value.status == 400 and error.value.message.startswith(TTL_ERROR)
        for unknown in (UNKNOWN, "..", ".", "lease_0123456789ABCDEF"):
            for call in (client.lease, client.renew, client.release, client.keep):
                with pytest.raises(ClientError) as error:
                    call(unknown)
                assert (error.value.status, error.value.message) == (404, "Lease not found"), (call, unknown)
        # An id is one path segment: never a way to another route (DELETE /network/ports/...).
        for call in (client.lease, client.renew, client.release, client.keep):
            with pytest.raises(ClientError) as error:
                call(f"../ports/{IP}/{served.ports[-1]}")
            assert error.value.status == 404, call
        assert client.lease(lease["id"]) == renewed and entries(client) == pool

        released = client.release(other["lease"])
        assert released["message"] == "Lease released"
        [freed] = released["freed"]
        assert (freed["port"], freed["in_use"], freed["lease"]) == (other["port"], False, None)
        assert entries(client)[other["port"]] == freed

        kept = client.keep(lease["id"])
        assert kept["message"] == "Lease kept"
        assert keys(kept["kept"]) == keys(answer["ports"])
        assert all(e["in_use"] is True and e["lease"] is None for e in kept["kept"])
        now = entries(client)
        assert all(now[e["port"]] == e for e in kept["kept"])
        for gone in (lease["id"], other["lease"]):
            with pytest.raises(ClientError) as error:
                client.lease(gone)
            assert error.value.status == 404
        assert client.leases() == []


# -- the client: the event stream -----------------------------------------------------------------


class Follower:
    """Client.events() in a thread, every event into a list; ``stop`` ends it at the next event."""

    def __init__(self, client: Client, after: int | None = None, reconnect: bool = True) -> None:
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._client, self._after, self._reconnect = client, after, reconnect
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._client.events(after=self._after, reconnect=self._reconnect):
                self.events.append(event)
                if self._stop.is_set():
                    return
        except BaseException as exc:  # shown by the test that waits
            self.error = exc

    def until(self, what: str, check: Callable[[list[Event]], bool]) -> list[Event]:
        def seen() -> bool:
            if self.error is not None:
                raise AssertionError(f"the stream failed: {self.error!r}")
            return check(list(self.events))

        wait_for(what, seen)
        return list(self.events)

    def stop(self, poke: Callable[[], object]) -> None:
        """End the thread: ``poke`` makes a change, whose event it reads last."""
        self._stop.set()
        if self._thread.is_alive():
            poke()
        self._thread.join(DEADLINE)
        assert not self._thread.is_alive()


def poke(client: Client) -> Callable[[], object]:
    """A change that always makes an event: a port added."""
    return lambda: client.add(IP, quiet_port("tcp", IP))


def count(n: int) -> Callable[[list[Event]], bool]:
    return lambda events: len(events) >= n


def check_stream(events: list[Event]) -> None:
    ids = [e.id for e in events]
    assert ids == sorted(set(ids)), f"ids not strictly increasing: {ids}"
    for event in events:
        assert MILLISECONDS.fullmatch(event.data.get("at", "")), event


def test_client_events_of_changes_made_meanwhile(served: Served) -> None:
    a = served.ports[0]
    with served.client() as client, served.client() as reader:
        follower = Follower(reader, after=0)  # from the start of the backlog: nothing is missed
        extra = quiet_port("tcp", IP)
        client.add(IP, extra, note="\x1b[31mred")
        client.use(IP, a, True)
        client.use(IP, a, True)  # changes nothing: no event
        client.use(IP, a, False)
        leased = client.claim_lease(2, ip=IP, ttl=600)
        lease = leased["lease"]
        renewed = client.renew(lease["id"], ttl=900)
        released = client.release(lease["id"])
        kept_lease = client.claim_lease(1, ip=IP, ttl=600)["lease"]
        kept = client.keep(kept_lease["id"])
        plain = client.claim(ip=IP)
        client.delete(IP, extra)
        with pytest.raises(ClientError):
            client.renew(UNKNOWN)  # refused: no event
        short = client.claim_lease(1, ip=IP, ttl=1)

        expected = [
            "port.added", "port.used", "port.freed", "ports.claimed", "lease.renewed", "lease.released",
            "ports.claimed", "lease.kept", "ports.claimed", "port.deleted", "ports.claimed", "lease.expired",
        ]  # fmt: skip
        events = follower.until("twelve events", count(len(expected)))
        follower.stop(poke(client))
    assert [e.type for e in events[: len(expected)]] == expected
    check_stream(events)
    added, used, freed, claimed, renew, release, claimed2, keep, claimed3, deleted, claimed4, expired = (
        events[: len(expected)]
    )
    assert [(p["port"], p["note"]) for p in added.data["ports"]] == [(extra, "\x1b[31mred")]
    assert [(p["port"], p["in_use"]) for p in used.data["ports"]] == [(a, True)]
    assert [(p["port"], p["in_use"]) for p in freed.data["ports"]] == [(a, False)]
    assert claimed.data["lease"] == lease and keys(claimed.data["ports"]) == keys(leased["ports"])
    assert all(p["lease"] == lease["id"] for p in claimed.data["ports"])
    assert renew.data["lease"]["id"] == lease["id"]
    assert renew.data["lease"]["expires_at"] == renewed["expires_at"]
    assert release.data["lease"]["id"] == lease["id"]
    assert keys(release.data["ports"]) == keys(released["freed"])
    assert all(p["in_use"] is False and p["lease"] is None for p in release.data["ports"])
    assert claimed2.data["lease"] == kept_lease
    assert keep.data["lease"]["id"] == kept_lease["id"] and keys(keep.data["ports"]) == keys(kept["kept"])
    assert claimed3.data["lease"] is None and keys(claimed3.data["ports"]) == keys(plain)
    assert [p["port"] for p in deleted.data["ports"]] == [extra]
    assert claimed4.data["lease"] == short["lease"]
    assert expired.data["lease"]["id"] == short["lease"]["id"]
    assert keys(expired.data["ports"]) == keys(short["ports"])


class Gate(httpx.HTTPTransport):
    """A transport whose requests wait while the gate is closed; it records each one sent."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()
        self.open.set()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert self.open.wait(DEADLINE), "the gate stayed closed"
        self.sent.append(request)
        return super().handle_request(request)


def test_events_resume_after_a_restart_with_no_event_missed(served: Served) -> None:
    ports = served.ports
    gate = Gate()
    with served.client() as client, Client(served.daemon.url, TOKEN, transport=gate) as reader:
        follower = Follower(reader, after=0)
        client.use(IP, ports[0], True)
        client.use(IP, ports[1], True)
        seen = follower.until("the first two events", count(2))
        gate.open.clear()  # the follower's reconnect waits until the changes below are made
        assert served.daemon.stop() in (0, -15)  # a clean exit (uvicorn re-raises SIGTERM), not a kill
        served.daemon.start()
        client.use(IP, ports[0], False)
        leased = client.claim_lease(2, ip=IP, ttl=600)
        client.release(leased["lease"]["id"])
        client.use(IP, ports[1], False)
        gate.open.set()
        events = follower.until("six events", count(6))
        follower.stop(poke(client))
        first, *reconnects = gate.sent
        assert (first.url.params.get("after"), first.headers.get("last-event-id")) == ("0", None)
        assert reconnects and {r.headers.get("last-event-id") for r in reconnects} == {str(seen[1].id)}
        # The daemon's backlog, read afresh, holds exactly what the follower saw: no gap, no repeat.
        last = events[-1].id
        fresh = Follower(reader, after=0, reconnect=False)
        backlog = fresh.until("the backlog", lambda seen: bool(seen) and seen[-1].id >= last)
        fresh.stop(poke(client))
    assert [e.type for e in events[:6]] == [
        "port.used", "port.used", "port.freed", "ports.claimed", "lease.released", "port.freed",
    ]  # fmt: skip
    check_stream(events)
    assert [e.id for e in backlog if e.id <= last] == [e.id for e in events]
    assert [e for e in backlog if e.id <= last] == events


def test_events_refuses_a_bad_token_and_a_bad_after_at_once(served: Served) -> None:
    with Client(served.daemon.url, "lightd_wrong_token_123456") as wrong, pytest.raises(ClientError) as error:
        next(wrong.events())
    assert error.value.status == 401
    with served.client() as client:
        for bad in (-1, 2**63):
            with pytest.raises(ClientError) as error:
                next(client.events(after=bad))
            assert error.value.status == 400, bad


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_claim_with_a_ttl_and_leases_ls_renew_release_keep(served: Served) -> None:
    claimed = served.lightd("ports", "claim", "-n", "2", "--ip", IP, "--ttl", "60")
    assert claimed.returncode == 0, claimed.stderr
    lines = claimed.stdout.splitlines()
    assert lines[0].split() == ["IP", "PORT", "PROTO", "IN", "USE", "HOLDER", "NOTE"]
    assert lines[3] == "2 entries"
    shown = re.fullmatch(r"lease (lease_[0-9a-f]{16}) expires at (\S+)", lines[4])
    assert shown and len(lines) == 5, claimed.stdout
    lease_id, expires_at = shown.groups()
    with served.client() as client:
        lease = client.lease(lease_id)
        assert lease["expires_at"] == expires_at and lease["ttl"] == 60
        assert sorted(int(line.split()[1]) for line in lines[1:3]) == sorted(
            e["port"] for e in lease["ports"]
        )
        assert all(line.split()[4] == lease_id for line in lines[1:3])  # the HOLDER column
        other = client.claim_lease(1, ip=IP, ttl=3600)

        listed = served.lightd("leases", "ls")
        assert listed.returncode == 0, listed.stderr
        rows = listed.stdout.splitlines()
        assert rows[0].split() == ["ID", "EXPIRES", "TTL", "PORTS"] and rows[-1] == "2 leases"
        first = f"{IP}:{lease['ports'][0]['port']}/tcp, {IP}:{lease['ports'][1]['port']}/tcp"
        assert rows[1].split(None, 3) == [lease_id, expires_at, "60", first]
        lease2 = other["lease"]
        assert rows[2].split(None, 3) == [
            lease2["id"], lease2["expires_at"], "3600", f"{IP}:{other['ports'][0]['port']}/tcp"
        ]  # fmt: skip

        renewed = served.lightd("leases", "renew", lease_id, "--ttl", "120")
        assert renewed.returncode == 0, renewed.stderr
        now = client.lease(lease_id)
        assert now["ttl"] == 120
        assert renewed.stdout == f"lease {lease_id} expires at {now['expires_at']}\n"
        again = served.lightd("leases", "renew", lease_id)
        assert again.returncode == 0 and again.stdout.startswith(f"lease {lease_id} expires at ")

        # Refused by the daemon: its error, a failing exit, nothing changed.
        pool, before = entries(client), client.leases()
        for args in (
            ("ports", "claim", "--ttl", "0"),
            ("ports", "claim", "--ttl", "86401"),
            ("leases", "renew", lease_id, "--ttl", "0"),
        ):
            refused = served.lightd(*args)
            assert refused.returncode != 0 and refused.stdout == "", args
            assert refused.stderr.startswith(f"lightd: {TTL_ERROR}"), (args, refused.stderr)
        for command in ("renew", "release", "keep"):
            refused = served.lightd("leases", command, UNKNOWN)
            assert (refused.returncode, refused.stderr, refused.stdout) == (
                2,
                "lightd: Lease not found\n",
                "",
            )
        not_a_number = served.lightd("ports", "claim", "--ttl", "soon")
        assert not_a_number.returncode == 2 and "--ttl" in not_a_number.stderr
        assert entries(client) == pool and client.leases() == before

        released = served.lightd("leases", "release", other["lease"]["id"])
        assert released.returncode == 0, released.stderr
        out = released.stdout.splitlines()
        assert out[1].split() == [IP, str(other["ports"][0]["port"]), "tcp", "no", "-"]
        assert out[2:] == ["1 entries", f"lease {other['lease']['id']} released: its ports are free"]
        assert entries(client)[other["ports"][0]["port"]]["in_use"] is False

        kept = served.lightd("leases", "keep", lease_id)
        assert kept.returncode == 0, kept.stderr
        out = kept.stdout.splitlines()
        assert sorted(line.split()[1:4] for line in out[1:3]) == sorted(
            [str(e["port"]), "tcp", "yes"] for e in lease["ports"]
        )
        assert out[3:] == ["2 entries", f"lease {lease_id} kept: its ports stay in use, held by the operator"]
        after = entries(client)
        assert all(after[e["port"]]["in_use"] and after[e["port"]]["lease"] is None for e in lease["ports"])

        empty = served.lightd("leases", "ls")
        assert empty.returncode == 0 and empty.stdout == "ID  EXPIRES  TTL  PORTS\n0 leases\n"


class CliFollower:
    """A `lightd events` process; its stdout lines into a queue as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def take(self, n: int) -> list[str]:
        taken: list[str] = []
        deadline = time.monotonic() + DEADLINE
        while len(taken) < n:
            try:
                taken.append(self.lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                self.process.kill()
                pytest.fail(f"lightd events printed {taken} and then nothing: {self.process.stderr!r}")
        return taken

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: the exit code and what it wrote on stderr."""
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self._reader.join(DEADLINE)
        assert self.process.stdout is not None and self.process.stderr is not None
        with self.process.stdout, self.process.stderr:
            return code, self.process.stderr.read()


def test_cli_events_lines_json_and_ctrl_c(served: Served) -> None:
    a = served.ports[0]
    with served.client() as client:
        raw = served.follow("--after", "0", "--json")
        text = served.follow("--after", "0")
        client.add(IP, quiet_port("tcp", IP), note="\x1b]0;owned\x07\nfake row\x7f\u0085\u2028é")
        client.use(IP, a, True)
        client.use(IP, a, False)
        leased = client.claim_lease(2, ip=IP, ttl=600)
        client.release(leased["lease"]["id"])
        lines = raw.take(5)
        said = text.take(5)
        assert raw.interrupt() == (130, "")
        assert text.interrupt() == (130, "")
        # What the client reads is what --json printed, line for line.
        reader = Follower(client, after=0, reconnect=False)
        events = reader.until("five events", count(5))
        reader.stop(poke(client))
    printed = [json.loads(line) for line in lines]
    assert printed == [{"id": e.id, "type": e.type, "data": e.data} for e in events[:5]]
    assert all(line.isprintable() for line in lines + said), "a control character reached the terminal"
    assert all(line.isascii() for line in lines)
    lease = leased["lease"]
    pair = ", ".join(f"{IP}:{p}/tcp" for p in sorted(e["port"] for e in leased["ports"]))
    assert [line.split(" ", 2)[:2] for line in said] == [[str(e.id), e.type] for e in events[:5]]
    assert said[1] == f"{events[1].id} port.used {IP}:{a}/tcp"
    assert said[2] == f"{events[2].id} port.freed {IP}:{a}/tcp"
    claimed = said[3].split(" ", 2)[2]
    assert sorted(claimed.split(" lease ")[0].split(", ")) == sorted(pair.split(", "))
    assert claimed.endswith(f" lease {lease['id']} until {lease['expires_at']}")
    assert said[4].startswith(f"{events[4].id} lease.released {lease['id']}: ")


def test_cli_events_refusals_end_at_once(served: Served) -> None:
    bad_after = served.lightd("events", "--after", "-1")
    assert bad_after.returncode == 2 and bad_after.stderr.startswith("lightd: ") and bad_after.stdout == ""
    assert "after" in bad_after.stderr.lower()
    not_a_number = served.lightd("events", "--after", "x")
    assert not_a_number.returncode == 2 and "--after" in not_a_number.stderr
    wrong = subprocess.run(
        [LIGHTD, "events", "--url", served.daemon.url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LIGHTD_TOKEN": "lightd_wrong_token_123456"},
    )
    assert wrong.returncode == 2 and wrong.stderr.startswith("lightd: ") and wrong.stdout == ""
    down = ServedDaemon(served.config)  # a port where nothing listens
    nobody = subprocess.run(
        [LIGHTD, "events", "--url", down.url], capture_output=True, text=True, timeout=60,
        env={**os.environ, "LIGHTD_TOKEN": TOKEN},
    )  # fmt: skip
    assert nobody.returncode == 2 and "cannot reach lightd" in nobody.stderr
