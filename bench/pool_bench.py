"""Issue 2's figures, side by side in one run against real `lightd serve` processes.

- requests/s of GET /network/ports/random on a pool of 131,070 entries vs a pool of 100;
- requests/s of random vs GET /api/v1/public/ping on the same (large) daemon;
- start-up time with 131,070 entries (process spawn until ping answers), median of several.

Rounds alternate between the targets and the figures are medians, since the machine is shared.
Run: .venv/bin/python bench/pool_bench.py [--rounds 5] [--seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import HEADERS, write_test_config  # noqa: E402
from tests.e2e.daemon import ServedDaemon  # noqa: E402

from bench.loadgen import run_load  # noqa: E402
from lightd.adapters.sqlite_store import SqliteStore  # noqa: E402
from lightd.core.changes import PutPort  # noqa: E402


def make_daemon(folder: Path, entries: list[PutPort]) -> ServedDaemon:
    config = write_test_config(folder, api={"access_log": False})
    store = SqliteStore(folder / "data" / "lightd.sqlite3")
    store.open()
    store.apply(entries)
    store.close()
    return ServedDaemon(config)


def full_range() -> list[PutPort]:
    return [PutPort("0.0.0.0", port, proto, False, None, None)
            for proto in ("tcp", "udp") for port in range(1, 65536)]


def small_range() -> list[PutPort]:
    return [PutPort("0.0.0.0", port, "tcp", False, None, None) for port in range(25000, 25100)]


async def measure(daemon: ServedDaemon, path: str, seconds: float, connections: int) -> float:
    headers = {} if path.startswith("/api/v1/public") else HEADERS
    result = await run_load("127.0.0.1", daemon.port, path, headers, connections, seconds)
    if result.errors:
        raise SystemExit(f"{path}: {result.errors} errors {result.statuses}")
    return result.rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as big_dir, tempfile.TemporaryDirectory() as small_dir:
        big = make_daemon(Path(big_dir), full_range())
        small = make_daemon(Path(small_dir), small_range())
        startups = []
        for _ in range(3):
            startups.append(big.start())
            big.stop()
        big.start()
        small.start()
        try:
            rates: dict[str, list[float]] = {"big": [], "small": [], "ping": []}
            warm = 0.5
            for target, path in ((big, "/network/ports/random"), (small, "/network/ports/random"),
                                 (big, "/api/v1/public/ping")):
                asyncio.run(measure(target, path, warm, args.connections))
            for _ in range(args.rounds):
                rates["big"].append(asyncio.run(measure(
                    big, "/network/ports/random", args.seconds, args.connections)))
                rates["small"].append(asyncio.run(measure(
                    small, "/network/ports/random", args.seconds, args.connections)))
                rates["ping"].append(asyncio.run(measure(
                    big, "/api/v1/public/ping", args.seconds, args.connections)))
        finally:
            big.stop()
            small.stop()

    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"rounds={args.rounds} x {args.seconds}s, {args.connections} keep-alive connections, "
          "medians")
    print(f"{'target':<48}{'req/s':>10}")
    print(f"{'GET /network/ports/random, pool of 131,070':<48}{med['big']:>10.0f}")
    print(f"{'GET /network/ports/random, pool of 100':<48}{med['small']:>10.0f}")
    print(f"{'GET /api/v1/public/ping (131,070 daemon)':<48}{med['ping']:>10.0f}")
    print(f"ratio random(131,070) / random(100): {med['big'] / med['small']:.2f}x  (target >= 0.80)")
    print(f"ratio random(131,070) / ping:        {med['big'] / med['ping']:.2f}x  (target >= 0.85)")
    print(f"start-up with 131,070 entries (spawn to first ping), median of 3: "
          f"{statistics.median(startups):.2f}s  (target < 2 s; runs: "
          + ", ".join(f"{s:.2f}" for s in startups) + ")")


if __name__ == "__main__":
    main()
