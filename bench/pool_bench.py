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
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import run_load  # noqa: E402
from lightd.adapters.sqlite_store import SqliteStore  # noqa: E402
from lightd.core.changes import PutPort  # noqa: E402
from tests.conftest import HEADERS, write_test_config  # noqa: E402
from tests.e2e.daemon import ServedDaemon  # noqa: E402

POOL_SETTINGS: dict = {}


def make_daemon(folder: Path, entries: list[PutPort]) -> ServedDaemon:
    config = write_test_config(folder, api={"access_log": False}, pool=POOL_SETTINGS)
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


def measure(daemon: ServedDaemon, path: str, seconds: float, connections: int, tool: str) -> float:
    """Requests/s with the same two headers on every path (ping ignores them)."""
    if tool == "wrk":
        return wrk_rate(daemon.url + path, seconds, connections)
    result = asyncio.run(run_load("127.0.0.1", daemon.port, path, HEADERS, connections, seconds))
    if result.errors:
        raise SystemExit(f"{path}: {result.errors} errors {result.statuses}")
    return result.rate


def wrk_rate(url: str, seconds: float, connections: int) -> float:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    for name, value in HEADERS.items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"{url}: errors\n{out}")
    [line] = [line for line in out.splitlines() if line.startswith("Requests/sec:")]
    return float(line.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--tool", choices=["wrk", "python"],
                        default="wrk" if shutil.which("wrk") else "python",
                        help="load generator: wrk (apt-get install wrk) or bench/loadgen.py")
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
            targets = {"big": (big, "/network/ports/random"),
                       "small": (small, "/network/ports/random"),
                       "ping": (big, "/api/v1/public/ping")}
            for target, path in targets.values():  # warm-up
                measure(target, path, 1, args.connections, args.tool)
            for _ in range(args.rounds):
                for name, (target, path) in targets.items():
                    rates[name].append(measure(target, path, args.seconds, args.connections,
                                               args.tool))
        finally:
            big.stop()
            small.stop()

    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"load: {args.tool}, rounds={args.rounds} x {args.seconds}s, {args.connections} keep-alive "
          "connections, same headers on every request, medians; host check and group commit on, "
          "firewall off")
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
