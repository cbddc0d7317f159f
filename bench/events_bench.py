"""Issue 13's figure: claims/s with event stream subscribers next to none, on real `lightd serve`.

Each round gets a fresh pair of daemons on 131,070 entries each (0.0.0.0:1-65535 tcp and udp),
alike in every setting; one of them ("with") has 110 subscribers on ``GET /network/events`` for
the whole round, the other ("without") none. The subscribers run in a process of their own (this
file, ``--subscribe``, on uvloop when it is installed), apart from the load generator: 100 idle
ones (connected, draining the socket into one buffer without parsing it) and 10 active ones
(undoing the chunked framing, parsing every event's id, type and JSON data, and checking the ids
increase). Every claim makes one ``ports.claimed``
event, so each active subscriber must get one event per claim made on its daemon.

In every round the pair serves ``POST /network/ports/claim`` (count 1, tcp and udp in turn) in
slices ordered without, with, with, without (with, without, without, with in odd rounds), so
that neither setup gets the fresher part of a machine whose speed drifts; a round's ratio is its
claims/s with over its claims/s without. Printed: medians of claims/s and of the daemon's CPU
time per claim, each round's ratio and their median (target >= 0.9), and what each active
subscriber got against the claims made.

Loopback only. Run: .venv/bin/python bench/events_bench.py [--rounds 6] [--seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_common_options, full_range, measure, served  # noqa: E402
from bench.loadgen import process_cpu_seconds  # noqa: E402
from lightd.adapters.sqlite_store import SqliteStore  # noqa: E402
from tests.conftest import HEADERS, write_test_config  # noqa: E402
from tests.e2e.daemon import ServedDaemon  # noqa: E402

CLAIM = "/network/ports/claim"
RANDOM = "/network/ports/random"
CLAIM_BODIES = [b'{"count": 1, "protocol": "tcp"}', b'{"count": 1, "protocol": "udp"}']
DATABASE = "data/lightd.sqlite3"
IDLE, ACTIVE = 100, 10
DRAIN_SECONDS = 30.0  # how long the active subscribers may take to catch up after a round
# One event as lightd writes it (its data is one line of JSON): id, type, data.
EVENT = re.compile(rb"^id: (\d+)\nevent: ([^\n]+)\ndata: ([^\n]*)\n", re.MULTILINE)


# -- the subscribers' process --------------------------------------------------------------------


def _request() -> bytes:
    head = ["GET /network/events HTTP/1.1", "Host: 127.0.0.1"]
    head += [f"{name}: {value}" for name, value in HEADERS.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, send the request, read the head (what follows stays in the reader)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_request())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"subscriber refused: {head[:200]!r}")
    if b"transfer-encoding: chunked" not in head.lower():
        raise SystemExit(f"the stream is not chunked, this parser expects it: {head!r}")
    return reader, writer


@dataclass
class Active:
    """A subscriber that parses every event (after undoing the chunked framing)."""

    events: int = 0
    first: int | None = None
    last: int | None = None
    out_of_order: int = 0
    comments: int = 0
    raw: bytearray = field(default_factory=bytearray)  # chunked bytes not yet decoded
    text: bytearray = field(default_factory=bytearray)  # decoded bytes not yet parsed

    def feed(self, data: bytes) -> None:
        self.raw += data
        while True:
            line_end = self.raw.find(b"\r\n")
            if line_end < 0:
                break
            size = int(bytes(self.raw[:line_end]).split(b";")[0], 16)
            if len(self.raw) < line_end + 2 + size + 2:
                break
            self.text += self.raw[line_end + 2 : line_end + 2 + size]
            del self.raw[: line_end + 2 + size + 2]
        # Whole events only: up to the last blank line; the rest waits for more bytes.
        end = self.text.rfind(b"\n\n")
        if end < 0:
            return
        text = bytes(self.text[: end + 2])
        del self.text[: end + 2]
        self.comments += text.count(b"\n: ") + text.startswith(b": ")
        for match in EVENT.finditer(text):
            self._event(int(match[1]), match[2].decode(), match[3])

    def _event(self, event_id: int, kind: str, raw: bytes) -> None:
        data = orjson.loads(raw)
        if kind != "ports.claimed" or not isinstance(data, dict) or "ports" not in data:
            raise SystemExit(f"unexpected event {kind}: {raw[:200]!r}")
        if self.last is not None and event_id <= self.last:
            self.out_of_order += 1
        if self.first is None:
            self.first = event_id
        self.last = event_id
        self.events += 1


async def _idle(port: int, sink: list[int], ready: asyncio.Event, opened: list[int], total: int) -> None:
    """Drain the socket into one buffer, looking at nothing but the answer's status line (what a
    subscriber costs at the least: the kernel's copy)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    buffer = bytearray(1 << 18)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, _request())
        got = await loop.sock_recv_into(sock, buffer)
        if not buffer[:got].startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"subscriber refused: {bytes(buffer[:200])!r}")
        opened.append(1)
        if len(opened) == total:
            ready.set()
        while got:
            sink[0] += got
            got = await loop.sock_recv_into(sock, buffer)
    finally:
        sock.close()


async def _active(port: int, state: Active, ready: asyncio.Event, opened: list[int], total: int) -> None:
    reader, writer = await _open(port)
    opened.append(1)
    if len(opened) == total:
        ready.set()
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            state.feed(data)
    finally:
        writer.close()


async def _subscribe(port: int, idle: int, active: int) -> None:
    """Commands on stdin: ``count`` prints the active ones' counts, ``stop`` prints and exits."""
    sink = [0]
    states = [Active() for _ in range(active)]
    ready = asyncio.Event()
    opened: list[int] = []
    total = idle + active
    tasks = [asyncio.ensure_future(_idle(port, sink, ready, opened, total)) for _ in range(idle)]
    tasks += [asyncio.ensure_future(_active(port, s, ready, opened, total)) for s in states]
    waiting = asyncio.ensure_future(ready.wait())
    done, _ = await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if waiting not in done:
        for task in done:
            task.result()  # raises what stopped it
        raise SystemExit("a subscriber ended before all were connected")
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        for task in tasks:
            if task.done() and task.exception() is not None:
                raise SystemExit(f"a subscriber failed: {task.exception()!r}")
        report = {
            "events": [s.events for s in states],
            "out_of_order": sum(s.out_of_order for s in states),
            "ended": sum(task.done() for task in tasks),
            "idle_bytes": sink[0],
        }
        print(json.dumps(report), flush=True)
        if command in ("stop", ""):
            for task in tasks:
                task.cancel()
            return


class Subscribers:
    """The subscribers' process, driven over its stdin and stdout."""

    def __init__(self, port: int, idle: int, active: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--subscribe", str(port), "--idle", str(idle),
             "--active", str(active)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != "ready":
            self.process.kill()
            raise SystemExit(f"the subscribers did not start: {line!r}")

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        return answer

    def stop(self) -> dict[str, Any]:
        answer = self.ask("stop")
        self.process.wait(timeout=30)
        return answer

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


# -- the bench ---------------------------------------------------------------------------------


def seeded_store(folder: Path) -> Path:
    path = folder / "seed.sqlite3"
    store = SqliteStore(path)
    store.open()
    store.apply(full_range())
    store.close()
    return path


def daemon(folder: Path, seed: Path, host_check: bool) -> ServedDaemon:
    config = write_test_config(folder, api={"access_log": False}, pool={"host_check": host_check})
    (folder / DATABASE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(seed, folder / DATABASE)
    return ServedDaemon(config)


@dataclass
class RoundResult:
    rate: dict[bool, float]  # summed claims/s of the two slices, by with-subscribers
    claims: int  # made on the daemon with subscribers
    got: list[int]  # events each active subscriber got
    out_of_order: int
    ended: int
    subscriber_cpu: float  # CPU seconds of the subscribers' process over the four slices


def one_round(
    number: int,
    base: Path,
    seed: Path,
    args: argparse.Namespace,
    rates: dict[bool, list[float]],
    cpus: dict[bool, list[float]],
) -> RoundResult:
    host_check = args.host_check == "on"
    with_subs = daemon(base / f"with{number}", seed, host_check)
    without = daemon(base / f"without{number}", seed, host_check)
    first, second = (with_subs, without) if number % 2 == 0 else (without, with_subs)
    with served(first), served(second):
        subscribers = Subscribers(with_subs.port, args.idle, args.active)
        try:
            for target in (with_subs, without):  # warm-up, on random: no events
                measure(target, RANDOM, 1, args.connections, args.tool)
            order = [(without, False), (with_subs, True), (with_subs, True), (without, False)]
            if number % 2:
                order = [(with_subs, True), (without, False), (without, False), (with_subs, True)]
            total = {True: 0.0, False: 0.0}
            claims = 0
            cpu_before = process_cpu_seconds(subscribers.process.pid)
            for target, subscribed in order:
                sample = measure(
                    target, CLAIM, args.seconds, args.connections, args.tool, bodies=CLAIM_BODIES
                )
                rates[subscribed].append(sample.rate)
                cpus[subscribed].append(sample.cpu_us)
                total[subscribed] += sample.rate
                if subscribed:
                    claims += sample.requests
            subscriber_cpu = process_cpu_seconds(subscribers.process.pid) - cpu_before
            deadline = time.monotonic() + DRAIN_SECONDS
            while min(subscribers.ask("count")["events"]) < claims and time.monotonic() < deadline:
                time.sleep(0.2)
            report = subscribers.stop()
        finally:
            subscribers.kill()
    return RoundResult(
        total, claims, report["events"], report["out_of_order"], report["ended"], subscriber_cpu
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(parser, connections=32)
    parser.set_defaults(rounds=6, seconds=2.0)
    parser.add_argument("--idle", type=int, default=IDLE)
    parser.add_argument("--active", type=int, default=ACTIVE)
    parser.add_argument("--subscribe", type=int, help=argparse.SUPPRESS)  # the subscribers' process
    args = parser.parse_args()
    if args.subscribe:
        # The subscribers' own cost as low as it gets (uvloop, as the daemon): on two cores it
        # comes out of the daemon's and the load generator's CPU.
        run = asyncio.run
        if importlib.util.find_spec("uvloop") is not None:
            import uvloop

            run = uvloop.run
        run(_subscribe(args.subscribe, args.idle, args.active))
        return

    rates: dict[bool, list[float]] = {True: [], False: []}
    cpus: dict[bool, list[float]] = {True: [], False: []}
    results: list[RoundResult] = []
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        seed = seeded_store(base)
        for number in range(args.rounds):
            results.append(one_round(number, base, seed, args, rates, cpus))

    print(
        f"load: {args.tool}, rounds={args.rounds} x 2 x {args.seconds}s per setup, "
        f"{args.connections} keep-alive connections, POST {CLAIM} count 1 (tcp/udp in turn); "
        f"a fresh pair of daemons of 131,070 entries per round, slices without/with/with/without "
        f"and with/without/without/with; subscribers: {args.idle} idle + {args.active} active in "
        f"a process of their own; host check {args.host_check}, fsync'd group commit on, firewall off; "
        f"{os.cpu_count()} CPUs for the daemons, the load generator and the subscribers"
    )
    rate_with, rate_without = statistics.median(rates[True]), statistics.median(rates[False])
    cpu_with, cpu_without = statistics.median(cpus[True]), statistics.median(cpus[False])
    print(f"{'setup':<40}{'claims/s':>10}{'CPU us/claim':>14}")
    print(f"{'no subscribers':<40}{rate_without:>10.0f}{cpu_without:>14.1f}")
    print(f"{f'{args.idle} idle + {args.active} active subscribers':<40}{rate_with:>10.0f}{cpu_with:>14.1f}")
    ratios = [r.rate[True] / r.rate[False] for r in results]
    print(
        "rounds' own ratios with/without: "
        + ", ".join(f"{r:.3f}" for r in ratios)
        + f"  (median {statistics.median(ratios):.3f}; target >= 0.9)"
    )
    for number, result in enumerate(results):
        print(
            f"round {number}: {result.claims} claims on the daemon with subscribers; events per "
            f"active subscriber: {', '.join(str(g) for g in result.got)}; ids out of order: "
            f"{result.out_of_order}; subscribers dropped: {result.ended}; the subscribers' "
            f"process used {result.subscriber_cpu:.2f} CPU s "
            f"({1e6 * result.subscriber_cpu / max(result.claims, 1):.0f} us per claim)"
        )
    missing = sum(r.claims * len(r.got) - sum(r.got) for r in results)
    print(f"events missing at the active subscribers, all rounds: {missing}")


if __name__ == "__main__":
    main()
