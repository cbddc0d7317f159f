"""Issue 10's point 5: how long big claims take, and how long ping waits meanwhile.

A real `lightd serve` on 0.0.0.0:1-65535 tcp+udp (131,070 entries; a few of them in use, at fixed
numbers, so the longest free run is known) with `pool.host_check` off, so the host's own sockets
do not matter. For each claim it prints the answer, the time to it, and the latency (median and
max) of the pings a second client had on the wire meanwhile, sent one after another on a
keep-alive connection (a ping still waiting when a claim timed out counts, as failed). That
client is a process of its own: a thread of this one would wait for this process's GIL while it
reads a big claim's answer, and count that wait as the daemon's.

- claims that cannot be met (the pool's counts, or no run long enough), each sent --repeat times
  in a row: one daemon answers them all, since they change nothing;
- claims that can be met, each on a fresh daemon, so each finds the pool it expects.

Every request has a timeout (--timeout, 10 s): code that stalls on a claim (d0608b0) shows as
"timeout" instead of running for minutes, and its daemon is killed and replaced before the next
case. Run: .venv/bin/python bench/claim_limits_bench.py [--timeout 10] [--repeat 20] [--rounds 1]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import full_range, make_daemon, served  # noqa: E402
from lightd.core.changes import PutPort  # noqa: E402
from tests.conftest import HEADERS  # noqa: E402
from tests.e2e.daemon import ServedDaemon  # noqa: E402

CLAIM = "/network/ports/claim"
PING = "/api/v1/public/ping"
# In use from the start, at fixed numbers: so 65,532 tcp entries, 65,533 udp and 65,530 pairs are
# free, and the longest run of free numbers is 19,999 (tcp, and tcp+udp).
IN_USE = {"tcp": (20000, 40000, 60000), "udp": (30000, 50000)}

IMPOSSIBLE = [
    {"count": 65535, "protocol": "both"},
    {"count": 65531, "protocol": "both"},
    {"count": 65533, "protocol": "tcp"},
    {"count": 46000, "protocol": "both", "contiguous": True},
    {"count": 20000, "protocol": "tcp", "contiguous": True},
    {"count": 20000, "protocol": "both", "contiguous": True},
]
POSSIBLE = [
    {"count": 1, "protocol": "tcp"},
    {"count": 2, "protocol": "both", "contiguous": True},
    {"count": 1000, "protocol": "tcp"},
    {"count": 40000, "protocol": "tcp"},
    {"count": 46000, "protocol": "tcp"},
    {"count": 40000, "protocol": "both"},
    {"count": 15000, "protocol": "both", "contiguous": True},
]


def pool_entries() -> list[PutPort]:
    return [
        entry._replace(in_use=True) if entry.port in IN_USE[entry.protocol] else entry
        for entry in full_range()
    ]


@dataclass
class Pings:
    samples: list[tuple[float, float, bool]] = field(default_factory=list)  # start, end, answered
    latencies: list[float] = field(default_factory=list)  # of the pings that overlap a window
    failed: int = 0

    def keep(self, start: float, end: float) -> None:
        """Keep the pings that were on the wire at some time between ``start`` and ``end``."""
        overlapping = [(s, e, ok) for s, e, ok in self.samples if s < end and e > start]
        self.latencies = [e - s for s, e, _ in overlapping]
        self.failed = sum(not ok for _, _, ok in overlapping)


def ping_until_stopped(url: str, timeout: float, ready: Any, stop: Any, out: Any) -> None:
    """The pinging process: ping back to back until ``stop``; send the samples to ``out``.
    (perf_counter is CLOCK_MONOTONIC, one clock for every process of the machine.)"""
    samples: list[tuple[float, float, bool]] = []
    with httpx.Client(timeout=timeout) as client:
        while not stop.is_set():
            started, answered = time.perf_counter(), False
            try:
                client.get(url + PING).raise_for_status()
                answered = True
            except httpx.HTTPError:
                pass
            finally:
                samples.append((started, time.perf_counter(), answered))
                ready.set()
    out.send(samples)


@contextmanager
def pinging(url: str, timeout: float) -> Iterator[Pings]:
    """Ping ``url`` back to back from a process of its own (connected, and answered once,
    before the block starts) while the block runs."""
    pings = Pings()
    context = multiprocessing.get_context("spawn")
    stop, ready = context.Event(), context.Event()
    receiving, sending = context.Pipe(duplex=False)
    process = context.Process(
        target=ping_until_stopped, args=(url, timeout, ready, stop, sending), daemon=True
    )
    process.start()
    ready.wait(timeout + 30)  # a spawned interpreter takes a moment to start
    try:
        yield pings
    finally:
        stop.set()
        if receiving.poll(timeout + 30):
            pings.samples = receiving.recv()
        process.join(timeout + 1)


@dataclass
class Result:
    body: dict[str, object]
    answer: str  # "200 (n entries)", "409", "timeout", ...
    seconds: list[float]  # one per time the claim was sent
    pings: Pings


def claim(daemon: ServedDaemon, body: dict[str, object], timeout: float, times: int = 1) -> Result:
    """``body`` claimed ``times`` in a row (stopping at a timeout) from a client connected
    beforehand, with the pings a second client had on the wire meanwhile."""
    seconds: list[float] = []
    with httpx.Client(base_url=daemon.url, headers=HEADERS, timeout=timeout) as client:
        client.get(PING).raise_for_status()
        with pinging(daemon.url, timeout) as pings:
            first = time.perf_counter()
            for _ in range(times):
                started = time.perf_counter()
                try:
                    response = client.post(CLAIM, json=body)
                except httpx.TimeoutException:
                    seconds.append(time.perf_counter() - started)
                    answer = "timeout"
                    break
                seconds.append(time.perf_counter() - started)
                answer = str(response.status_code)
                if response.status_code == 200:
                    answer += f" ({len(response.json()['ports'])} entries)"
            last = time.perf_counter()
            if answer == "timeout":
                daemon.kill()  # still busy with the claim: no use waiting for it
    pings.keep(first, last)
    return Result(body, answer, seconds, pings)


def describe(body: dict[str, object]) -> str:
    words = [f"{body['count']} {body['protocol']}"]
    if body.get("contiguous"):
        words.append("contiguous")
    return " ".join(words)


def report(title: str, results: list[Result]) -> None:
    print(title)
    print(
        f"  {'claim':<26}{'answer':<21}{'time (median / max)':>24}{'ping median / max':>24}"
        f"{'pings answered':>22}"
    )
    for result in results:
        took = f"{ms(statistics.median(result.seconds))} / {ms(max(result.seconds))}"
        if len(result.seconds) > 1:
            took = f"{len(result.seconds)}x: " + took
        latencies = result.pings.latencies
        ping = f"{ms(statistics.median(latencies))} / {ms(max(latencies))}" if latencies else "-"
        pings = f"{len(latencies) - result.pings.failed}"
        if result.pings.failed:
            pings += f" ({result.pings.failed} failed)"
        print(f"  {describe(result.body):<26}{result.answer:<21}{took:>24}{ping:>24}{pings:>22}")


def ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def idle_pings(daemon: ServedDaemon, timeout: float) -> Pings:
    with pinging(daemon.url, timeout) as pings:
        start = time.perf_counter()
        time.sleep(1.0)
        end = time.perf_counter()
    pings.keep(start, end)  # the samples arrive once the pinging process stopped
    return pings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, in seconds")
    parser.add_argument("--rounds", type=int, default=1, help="how often to run every case")
    parser.add_argument(
        "--repeat", type=int, default=20, help="how often each claim that cannot be met is sent in a row"
    )
    args = parser.parse_args()
    entries = pool_entries()

    impossible: list[Result] = []
    possible: list[Result] = []
    idle: Pings | None = None
    with tempfile.TemporaryDirectory() as folder:
        cases = [body for _ in range(args.rounds) for body in IMPOSSIBLE]
        while cases:
            # One daemon answers claims that change nothing, until one of them times out.
            case_folder = Path(folder) / f"impossible-{len(cases)}"
            case_folder.mkdir()
            daemon = make_daemon(case_folder, entries, host_check=False)
            with served(daemon):
                if idle is None:
                    idle = idle_pings(daemon, args.timeout)
                while cases:
                    result = claim(daemon, cases.pop(0), args.timeout, args.repeat)
                    impossible.append(result)
                    if result.answer == "timeout":
                        break  # killed: the next case gets a daemon of its own
        for number, body in enumerate(body for _ in range(args.rounds) for body in POSSIBLE):
            case_folder = Path(folder) / f"possible-{number}"
            case_folder.mkdir()
            daemon = make_daemon(case_folder, entries, host_check=False)
            with served(daemon):
                possible.append(claim(daemon, body, args.timeout))

    print(
        f"lightd serve on 0.0.0.0:1-65535 tcp+udp (131,070 entries, {sum(map(len, IN_USE.values()))} "
        f"in use), host check off; timeout {args.timeout:.0f} s per request; ping from a second "
        "client, back to back, during each claim"
    )
    if idle is not None and idle.latencies:
        print(
            f"idle ping: median {1e3 * statistics.median(idle.latencies):.2f} ms, max "
            f"{1e3 * max(idle.latencies):.2f} ms ({len(idle.latencies)} pings in 1 s)"
        )
    report("claims that cannot be met (409 expected):", impossible)
    report("claims that can be met (each on a fresh daemon):", possible)


if __name__ == "__main__":
    main()
