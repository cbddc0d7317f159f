"""A big answer encoded in pieces is byte for byte the answer encoded in one go."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from lightd.api.responses import Encoded, encode_in_pieces, json_response, send_json
from lightd.api.schemas import entry_out
from lightd.core.entry import Entry


def entries(count: int) -> list[Entry]:
    notes = [None, "lobby", 'naïve ✓ "quoted"', ""]
    return [
        Entry(
            "0.0.0.0" if n % 3 else "::",
            1 + n,
            ("tcp", "udp")[n % 2],
            n % 5 != 0,
            None if n % 7 else f"c{n}",
            notes[n % 4],
        )
        for n in range(count)
    ]


@pytest.mark.parametrize("count", [1, 2, 9, 10, 11, 31])
async def test_pieces_join_to_the_bytes_of_one_go(count):
    items = entries(count)
    encoded = await encode_in_pieces(b'{"ports":', items, entry_out, b"}", piece=10)
    assert isinstance(encoded, Encoded)
    assert encoded.body == orjson.dumps({"ports": [entry_out(e) for e in items]})


async def test_the_loop_runs_other_work_between_two_pieces():
    made: list[int] = []  # entries converted so far, as seen by another callback each turn

    def convert(entry: Entry) -> dict[str, object]:
        made.append(entry.port)
        return entry_out(entry)

    seen: list[int] = []
    loop = asyncio.get_running_loop()
    done = False

    def other_callback() -> None:
        seen.append(len(made))
        if not done:
            loop.call_soon(other_callback)

    loop.call_soon(other_callback)
    await encode_in_pieces(b"", entries(25), convert, b"", piece=10)
    done = True
    assert len(made) == 25
    # Another callback ran after the first piece and after the second, before the whole was made.
    assert 10 in seen and 20 in seen


async def test_an_encoded_body_is_answered_as_it_is_by_both_entrances():
    body = await encode_in_pieces(b'{"ports":', entries(3), entry_out, b"}", piece=2)
    assert json_response(body).body == body.body
    sent: list[dict[str, object]] = []

    async def send(message):
        sent.append(message)

    await send_json(send, 200, body)
    assert sent[1]["body"] == body.body
    assert (b"content-length", str(len(body.body)).encode()) in sent[0]["headers"]
    # Anything else is encoded as before.
    assert json_response({"a": 1}).body == b'{"a":1}'
