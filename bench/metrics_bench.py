"""Issue 12's figure: what the metrics cost the hot paths, against real `lightd serve` processes.

Two daemons on 131,070 entries each (0.0.0.0:1-65535 tcp and udp), alike but for
``metrics.enabled`` (true, as shipped, and false); each round gets a fresh pair, so no claim
round runs out of free ports. In every round the pair serves ``random`` and then ``claim``
(count 1, tcp and udp in turn) in slices ordered on, off, off, on (off, on, on, off in odd rounds),
so that neither gets the fresher part of a machine whose speed drifts; a round's ratio is its
rates on over its rates off. Printed: medians of the rates and of the daemon's CPU time per
request, each round's ratio and their median (target >= 0.95 on both). Also the time of one scrape
of ``GET /metrics`` on that pool (it counts the pool's entries then, on the event loop).

Loopback only. Run: .venv/bin/python bench/metrics_bench.py [--rounds 8] [--seconds 1]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_common_options, full_range, measure, served  # noqa: E402
from lightd.adapters.sqlite_store import SqliteStore  # noqa: E402
from tests.conftest import TOKEN, write_test_config  # noqa: E402
from tests.e2e.daemon import ServedDaemon  # noqa: E402

RANDOM = "/network/ports/random"
CLAIM = "/network/ports/claim"
CLAIM_BODIES = [b'{"count": 1, "protocol": "tcp"}', b'{"count": 1, "protocol": "udp"}']
DATABASE = "data/lightd.sqlite3"


def seeded_store(folder: Path) -> Path:
    """One database of the full range, copied for every daemon (seeding takes a while)."""
    path = folder / "seed.sqlite3"
    store = SqliteStore(path)
    store.open()
    store.apply(full_range())
    store.close()
    return path


def daemon(folder: Path, seed: Path, metrics: bool, host_check: bool) -> ServedDaemon:
    config = write_test_config(
        folder,
        api={"access_log": False},
        pool={"host_check": host_check},
        metrics={"enabled": metrics},
    )
    (folder / DATABASE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(seed, folder / DATABASE)
    return ServedDaemon(config)


def scrape_seconds(target: ServedDaemon) -> list[float]:
    took = []
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        for _ in range(5):
            started = time.perf_counter()
            response = client.get(target.url + "/metrics")
            took.append(time.perf_counter() - started)
            assert response.status_code == 200 and b"lightd_pool_ports" in response.content
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(parser, connections=32)
    parser.set_defaults(rounds=8, seconds=1.0)
    args = parser.parse_args()
    host_check = args.host_check == "on"

    rates: dict[tuple[str, bool], list[float]] = {}
    cpus: dict[tuple[str, bool], list[float]] = {}
    paired: dict[str, list[float]] = {RANDOM: [], CLAIM: []}
    scrapes: list[float] = []
    with tempfile.TemporaryDirectory() as base:
        seed = seeded_store(Path(base))
        for round_number in range(args.rounds):
            on = daemon(Path(base) / f"on{round_number}", seed, True, host_check)
            off = daemon(Path(base) / f"off{round_number}", seed, False, host_check)
            # Started in turns too: the first process may land on the quieter core.
            first, second = (on, off) if round_number % 2 == 0 else (off, on)
            with served(first), served(second):
                for target in (on, off):  # warm-up
                    measure(target, RANDOM, 1, args.connections, args.tool)
                # A B B A (B A A B in odd rounds): a drift of the machine's speed within the
                # round weighs on both daemons alike.
                order = [(on, True), (off, False), (off, False), (on, True)]
                if round_number % 2:
                    order = [(off, False), (on, True), (on, True), (off, False)]
                for path in (RANDOM, CLAIM):
                    bodies = CLAIM_BODIES if path == CLAIM else None
                    total = {True: 0.0, False: 0.0}
                    for target, enabled in order:
                        sample = measure(
                            target, path, args.seconds, args.connections, args.tool, bodies=bodies
                        )
                        rates.setdefault((path, enabled), []).append(sample.rate)
                        cpus.setdefault((path, enabled), []).append(sample.cpu_us)
                        total[enabled] += sample.rate
                    paired[path].append(total[True] / total[False])
                if round_number == 0:
                    scrapes = scrape_seconds(on)

    print(
        f"load: {args.tool}, rounds={args.rounds} x 2 x {args.seconds}s per daemon and target, "
        f"{args.connections} keep-alive connections, medians; a fresh pair of daemons of 131,070 "
        f"entries per round, slices on/off/off/on and off/on/on/off; host check {args.host_check}, "
        "fsync'd group commit on, firewall off"
    )
    print(
        f"{'target':<34}{'on req/s':>10}{'off req/s':>11}{'on/off':>8}"
        f"{'on CPU us':>11}{'off CPU us':>12}{'off/on':>8}"
    )
    for path, label in ((RANDOM, "GET /network/ports/random"), (CLAIM, "POST /network/ports/claim")):
        rate_on, rate_off = (statistics.median(rates[(path, e)]) for e in (True, False))
        cpu_on, cpu_off = (statistics.median(cpus[(path, e)]) for e in (True, False))
        print(
            f"{label:<34}{rate_on:>10.0f}{rate_off:>11.0f}{rate_on / rate_off:>8.3f}"
            f"{cpu_on:>11.1f}{cpu_off:>12.1f}{cpu_off / cpu_on:>8.3f}"
        )
        ratios = paired[path]
        print(
            "  rounds' own ratios on/off: "
            + ", ".join(f"{r:.3f}" for r in ratios)
            + f"  (median {statistics.median(ratios):.3f}; target >= 0.95)"
        )
    print(
        "GET /metrics on 131,070 entries, median of 5 scrapes: "
        f"{1000 * statistics.median(scrapes):.1f} ms (runs: "
        + ", ".join(f"{1000 * s:.1f}" for s in scrapes)
        + ")"
    )


if __name__ == "__main__":
    main()
