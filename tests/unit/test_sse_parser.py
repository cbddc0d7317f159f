"""The client's reading of text/event-stream (WHATWG rules), and Client.events over a fake transport."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lightd.cli_leases import summary
from lightd.client import Client, ClientError, Event
from lightd.client._events import EventParser, Message, StreamParser, to_event

Json = dict[str, Any]

LIGHTD_STREAM = (
    b": connected\n\n"
    b'id: 7\nevent: port.added\ndata: {"ports": [{"ip": "0.0.0.0", "port": 25565}], "at": "x"}\n\n'
    b": heartbeat\n\n"
    b'id: 8\nevent: lease.expired\ndata: {"lease": {"id": "lease_00"}, "ports": []}\n\n'
)
LIGHTD_EVENTS = [
    Event(7, "port.added", {"ports": [{"ip": "0.0.0.0", "port": 25565}], "at": "x"}),
    Event(8, "lease.expired", {"lease": {"id": "lease_00"}, "ports": []}),
]


def parse(text: str, last_id: str = "") -> list[Message]:
    return StreamParser(last_id).feed(text)


def in_pieces(data: bytes, cuts: list[int]) -> list[Event]:
    parser = EventParser()
    events: list[Event] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        events += parser.feed(data[start:cut])
        start = cut
    return events


def test_lightd_stream_in_one_piece():
    assert EventParser().feed(LIGHTD_STREAM) == LIGHTD_EVENTS


def test_split_at_every_byte():
    parser = EventParser()
    events = [event for i in range(len(LIGHTD_STREAM)) for event in parser.feed(LIGHTD_STREAM[i : i + 1])]
    assert events == LIGHTD_EVENTS


@pytest.mark.parametrize("cut", range(1, len(LIGHTD_STREAM)))
def test_split_in_two_anywhere(cut):
    assert in_pieces(LIGHTD_STREAM, [cut]) == LIGHTD_EVENTS


@pytest.mark.parametrize("end", ["\r\n", "\r", "\n"])
def test_every_line_end(end):
    text = LIGHTD_STREAM.decode().replace("\n", end)
    parser = EventParser()
    assert parser.feed(text.encode()) == LIGHTD_EVENTS
    one_by_one = EventParser()
    data = text.encode()
    assert [e for i in range(len(data)) for e in one_by_one.feed(data[i : i + 1])] == LIGHTD_EVENTS


def test_a_crlf_split_between_pieces_is_one_line_end():
    # Read as two line ends, the CR and the LF would make a blank line and dispatch "a" alone.
    parser = StreamParser()
    assert parser.feed("data: a\r") == []
    assert parser.feed("\ndata: b\r") == []
    assert parser.feed("\n\r\n") == [Message("", "message", "a\nb")]


def test_a_lone_cr_then_a_blank_line_in_the_next_piece():
    parser = StreamParser()
    assert parser.feed("data: a\r") == []
    assert parser.feed("\r") == [Message("", "message", "a")]  # CR CR: a line end, then a blank line


def test_empty_pieces_change_nothing():
    parser = StreamParser()
    assert parser.feed("data: a\r") == []
    assert parser.feed("") == []
    assert parser.feed("\ndata: b\n") == []
    assert parser.feed("\n") == [Message("", "message", "a\nb")]


def test_multi_line_data_is_joined_with_newlines():
    assert parse("data: one\ndata:two\ndata:  three\ndata\ndata: \n\n") == [
        Message("", "message", "one\ntwo\n three\n\n")
    ]


def test_comments_are_skipped_anywhere():
    text = ": hello\ndata: a\n:  middle: of it\ndata: b\n: end\n\n:\n\n"
    assert parse(text) == [Message("", "message", "a\nb")]


def test_an_event_without_id_keeps_the_last_id():
    text = "id: 3\ndata: a\n\ndata: b\n\nid: 4\nevent: x\ndata: c\n\ndata: d\n\n"
    assert parse(text) == [
        Message("3", "message", "a"),
        Message("3", "message", "b"),
        Message("4", "x", "c"),
        Message("4", "message", "d"),  # the event type does not carry over
    ]


def test_a_block_without_data_dispatches_nothing_but_sets_the_id():
    parser = StreamParser()
    assert parser.feed("id: 9\nevent: nothing\n\n") == []
    assert parser.last_id == "9"
    assert parser.feed("data: x\n\n") == [Message("9", "message", "x")]
    assert parser.feed("id\ndata: y\n\n") == [Message("", "message", "y")]  # an empty id resets it


def test_an_id_with_nul_is_ignored_and_unknown_fields_too():
    assert parse("id: 5\n\nid: 6\0\nfoo: bar\ndata: x\n\n") == [Message("5", "message", "x")]


def test_the_field_name_is_exact_and_one_space_only_is_stripped():
    assert parse("Data: no\nevent:  two\ndata:x\n\n") == [Message("", " two", "x")]


def test_retry_is_read_when_all_digits():
    parser = StreamParser()
    parser.feed("retry: 1500\n\nretry: 2s\n\nretry:\n\n")
    assert parser.retry == 1500


def test_an_unfinished_block_waits_and_a_closed_stream_drops_it():
    parser = StreamParser()
    assert parser.feed("id: 1\ndata: {}\n") == []  # no blank line yet: not dispatched
    assert parser.feed("\n") == [Message("1", "message", "{}")]
    assert parser.feed("data: half") == []


def test_a_bom_is_dropped_only_at_the_start():
    assert parse("\ufeffdata: a\n\n") == [Message("", "message", "a")]
    parser = StreamParser()
    parser.feed("data: a\n\n")
    assert parser.feed("\ufeffdata: b\n\n") == []  # "\ufeffdata" is an unknown field


def test_a_character_split_between_pieces_and_invalid_utf8():
    data = 'id: 1\nevent: port.added\ndata: {"note": "€ and 漢"}\n\n'.encode()
    for cut in range(1, len(data)):
        assert in_pieces(data, [cut]) == [Event(1, "port.added", {"note": "€ and 漢"})]
    bad = EventParser().feed(b'id: 2\nevent: x\ndata: {"note": "\xff"}\n\n')
    assert bad == [Event(2, "x", {"note": "\ufffd"})]


def test_an_event_starts_from_the_id_given():
    assert EventParser(41).feed(b'data: {"a": 1}\n\n') == [Event(41, "message", {"a": 1})]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (Message("", "port.added", "{}"), "id is not a number"),
        (Message("lease_1", "port.added", "{}"), "id is not a number"),
        (Message("-1", "port.added", "{}"), "id is not a number"),
        (Message("٣", "port.added", "{}"), "id is not a number"),
        (Message("1", "port.added", "{not json"), "not JSON"),
        (Message("1", "port.added", "[1, 2]"), "not a JSON object"),
        (Message("1", "port.added", "NaN"), "not a JSON object"),
    ],
)
def test_what_lightd_does_not_send_is_refused(message, reason):
    with pytest.raises(ValueError, match=reason):
        to_event(message)


# -- any stream lightd may send, cut anywhere ---------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
events = st.lists(
    st.builds(
        Event,
        st.integers(0, 2**63 - 1),
        st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), min_size=1).filter(
            lambda text: not text.startswith(" ")
        ),
        st.dictionaries(st.text(), json_values, max_size=4),
    ),
    max_size=6,
)


def wire(items: list[Event], end: str, comments: list[str], indent: bool) -> bytes:
    text = ": connected" + end + end
    for n, event in enumerate(items):
        space = " " if indent else ""
        data = json.dumps(event.data, indent=1 if n % 2 else None)  # multi-line data too
        text += f"id:{space}{event.id}{end}event:{space}{event.type}{end}"
        text += "".join(f"data:{space}{line}{end}" for line in data.split("\n"))
        text += end
        if comments:
            text += f":{comments[n % len(comments)]}{end}{end}"
    return text.encode()


@given(
    events,
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.lists(st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"])), max_size=3),
    st.booleans(),
    st.data(),
)
def test_any_stream_cut_anywhere(items, end, comments, indent, data):
    stream = wire(items, end, comments, indent)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    assert in_pieces(stream, cuts) == items


# -- Client.events over a fake transport ---------------------------------------------------------


class Daemon:
    """Answers GET /network/events with the next of ``answers``; records each request."""

    def __init__(self, answers: list[httpx.Response | Exception]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def stream(*pieces: bytes, then: Exception | None = None) -> httpx.Response:
    def body() -> Iterator[bytes]:
        yield from pieces
        if then is not None:
            raise then

    return httpx.Response(200, headers={"content-type": "text/event-stream; charset=utf-8"}, content=body())


def event(n: int, kind: str = "port.added") -> bytes:
    return f'id: {n}\nevent: {kind}\ndata: {{"n": {n}}}\n\n'.encode()


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr("lightd.client._client.time.sleep", slept.append)
    return slept


def client(daemon: Daemon) -> Client:
    return Client("http://lightd", "lightd_token", transport=httpx.MockTransport(daemon))


def test_reconnects_with_the_last_id_seen_and_backs_off(sleeps):
    daemon = Daemon(
        [
            stream(b": connected\n\n", event(1), event(2), then=httpx.ReadError("reset")),
            httpx.ConnectError("refused"),
            httpx.ConnectError("refused"),
            stream(event(3), b"id: 4\nevent: port.del"),  # a clean close in the middle of an event
            stream(event(4)),
        ]
    )
    got = []
    with client(daemon) as lightd:
        for item in lightd.events():
            got.append(item)
            if item.id == 4:
                break
    assert got == [Event(n, "port.added", {"n": n}) for n in (1, 2, 3, 4)]
    sent = [(r.headers.get("last-event-id"), r.url.params.get("after")) for r in daemon.requests]
    assert sent == [(None, None), ("2", None), ("2", None), ("2", None), ("3", None)]
    assert all(
        r.headers["accept"] == "text/event-stream, Application/vnd.pkglatv1+json" for r in daemon.requests
    )
    assert all(r.headers["authorization"] == "Bearer lightd_token" for r in daemon.requests)
    assert sleeps == [0.5, 1.0, 2.0, 0.5]  # doubling while it fails, from the start once it is back


def test_after_is_sent_and_the_delay_stops_at_five_seconds(sleeps):
    daemon = Daemon([stream(b""), *[httpx.ConnectError("refused")] * 6, stream(event(12))])
    with client(daemon) as lightd:
        assert next(lightd.events(after=11)) == Event(12, "port.added", {"n": 12})
    sent = [(r.headers.get("last-event-id"), r.url.params.get("after")) for r in daemon.requests]
    assert sent == [(None, "11")] + [("11", None)] * 7
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


@pytest.mark.parametrize("status", [400, 401, 406, 503])
def test_an_error_answer_is_raised_at_once_even_on_a_reconnect(sleeps, status):
    error = httpx.Response(status, json={"error": f"refused with {status}"})
    with client(Daemon([error])) as lightd, pytest.raises(ClientError) as raised:
        next(lightd.events())
    assert (raised.value.status, raised.value.message) == (status, f"refused with {status}")
    daemon = Daemon([stream(event(1), then=httpx.ReadError("reset")), error])
    with client(daemon) as lightd, pytest.raises(ClientError) as raised:
        list(lightd.events())
    assert raised.value.status == status and len(daemon.requests) == 2 and sleeps == [0.5]


def test_without_reconnect_a_drop_ends_the_iteration(sleeps):
    daemon = Daemon([stream(event(1), event(2), then=httpx.RemoteProtocolError("gone"))])
    with client(daemon) as lightd:
        assert [e.id for e in lightd.events(reconnect=False)] == [1, 2]
    daemon = Daemon([stream(event(1))])
    with client(daemon) as lightd:
        assert [e.id for e in lightd.events(reconnect=False)] == [1]
    assert len(daemon.requests) == 1 and sleeps == []


def test_a_daemon_that_cannot_be_reached_at_first_is_an_error(sleeps):
    with client(Daemon([httpx.ConnectError("refused")])) as lightd, pytest.raises(ClientError) as raised:
        next(lightd.events())
    assert raised.value.status == 0 and "cannot reach lightd" in raised.value.message and sleeps == []


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (httpx.Response(200, json={"ports": []}), "is not lightd's event stream (application/json)"),
        (stream(b"id: x\ndata: {}\n\n"), "id is not a number"),
        (stream(b"id: 1\ndata: [1]\n\n"), "not a JSON object"),
    ],
)
def test_what_is_not_lightds_stream_is_an_error(sleeps, answer, says):
    with client(Daemon([answer])) as lightd, pytest.raises(ClientError) as raised:
        next(lightd.events())
    assert says in raised.value.message and sleeps == []


def test_reset_is_yielded_and_its_id_is_the_next_last_event_id(sleeps):
    reset: dict[str, Any] = {"reason": "too far behind", "after": 1, "oldest": 50, "last": 60}
    daemon = Daemon(
        [
            stream(
                f"id: 60\nevent: reset\ndata: {json.dumps(reset)}\n\n".encode(), then=httpx.ReadError("x")
            ),
            stream(event(61)),
        ]
    )
    with client(daemon) as lightd:
        items = lightd.events(after=1)
        assert next(items) == Event(60, "reset", reset)
        assert next(items).id == 61
    sent = [(r.headers.get("last-event-id"), r.url.params.get("after")) for r in daemon.requests]
    assert sent == [(None, "1"), ("60", None)]


# -- what a line of `lightd events` says -------------------------------------------------------


def entry(port: int, ip: str = "0.0.0.0", protocol: str = "tcp") -> Json:
    return {"ip": ip, "port": port, "protocol": protocol, "in_use": True, "container": None, "lease": None}


MC = {"internal_id": "mc-1"}
LEASE = {"id": "lease_0123456789abcdef", "expires_at": "2026-12-02T08:00:05Z", "ttl": 60}


@pytest.mark.parametrize(
    ("kind", "data", "line"),
    [
        ("port.added", {"ports": [entry(25565), entry(19132, "::", "udp")]},
         "0.0.0.0:25565/tcp, [::]:19132/udp"),
        ("port.deleted", {"ports": [entry(p) for p in range(1, 8)]},
         "0.0.0.0:1/tcp, 0.0.0.0:2/tcp, 0.0.0.0:3/tcp, 0.0.0.0:4/tcp and 3 more"),
        ("port.used", {"ports": []}, "no ports"),
        ("ports.claimed", {"ports": [entry(5)], "lease": None}, "0.0.0.0:5/tcp"),
        ("ports.claimed", {"ports": [entry(5)], "lease": LEASE},
         "0.0.0.0:5/tcp lease lease_0123456789abcdef until 2026-12-02T08:00:05Z"),
        ("lease.renewed", {"lease": LEASE, "ports": [entry(5)]},
         "lease_0123456789abcdef until 2026-12-02T08:00:05Z: 0.0.0.0:5/tcp"),
        ("lease.expired", {"lease": LEASE, "ports": [entry(5)]}, "lease_0123456789abcdef: 0.0.0.0:5/tcp"),
        ("lease.kept", {"lease": LEASE, "ports": [entry(5)]}, "lease_0123456789abcdef: 0.0.0.0:5/tcp"),
        ("container.created", {"container": {"internal_id": "mc-1"}, "ports": [entry(5)]},
         "mc-1: 0.0.0.0:5/tcp"),
        ("container.rebound", {"container": MC, "ports": [entry(6)], "freed": [entry(5)]},
         "mc-1: 0.0.0.0:6/tcp; freed 0.0.0.0:5/tcp"),
        ("container.deleted", {"internal_id": "mc-1", "freed": [entry(6)]}, "mc-1: freed 0.0.0.0:6/tcp"),
        ("firewall.repaired", {"added": 2, "removed": 1, "drift": ["x"]}, "added 2, removed 1 rules"),
        ("repair.finding", {"finding": {"type": "idle", "message": "0.0.0.0:5/tcp is idle"}},
         "idle: 0.0.0.0:5/tcp is idle"),
        ("reset", {"reason": "too far behind", "after": 3, "oldest": 90, "last": 99},
         "too far behind (after 3, oldest kept 90, last 99): re-read the pool"),
        ("something.new", {"at": "2026-12-02T08:00:05.000Z", "n": 1}, '{"n": 1}'),
    ],
)  # fmt: skip
def test_each_kind_of_event_has_its_summary(kind, data, line):
    assert summary(kind, {"at": "2026-12-02T08:00:05.123Z", **data}) == line


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        ("port.added", {"ports": [entry(5, "\x1b[2J")]}),
        (
            "ports.claimed",
            {"ports": [entry(5)], "lease": {"id": "x\nfake 2 port.freed", "expires_at": "\x07"}},
        ),
        ("lease.released", {"lease": {"id": "\x9b31m"}, "ports": ["\x1b"]}),
        ("container.deleted", {"internal_id": "\u202eevil", "freed": []}),
        ("repair.finding", {"finding": {"type": "\r", "message": "\x1b]0;title\x07"}}),
        ("reset", {"reason": "\x1b[31m"}),
        ("other", {"note": "\x1b[31m\n"}),
    ],
)
def test_what_the_daemon_sends_is_shown_never_obeyed(kind, data):
    shown = summary(kind, data)
    assert shown.isprintable(), shown
