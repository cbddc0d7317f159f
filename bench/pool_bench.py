"""Issue 2's figures, side by side in one run against real `lightd serve` processes.

- requests/s of GET /network/ports/random on a pool of 131,070 entries vs a pool of 100;
- requests/s of random vs GET /api/v1/public/ping on the same (large) daemon, and the daemon's
  CPU time per request of each;
- start-up time with 131,070 entries (process spawn until ping answers), median of several.

Rounds alternate between the targets and the figures are medians, since the machine is shared.
Run: .venv/bin/python bench/pool_bench.py [--rounds 5] [--seconds 2] [--host-check off]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_common_options, full_range, make_daemon, measure, served  # noqa: E402
from lightd.core.changes import PutPort  # noqa: E402


def small_range() -> list[PutPort]:
    return [PutPort("0.0.0.0", port, "tcp", False, None, None) for port in range(25000, 25100)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(parser, connections=32)
    args = parser.parse_args()
    host_check = args.host_check == "on"

    with tempfile.TemporaryDirectory() as big_dir, tempfile.TemporaryDirectory() as small_dir:
        big = make_daemon(Path(big_dir), full_range(), host_check)
        small = make_daemon(Path(small_dir), small_range(), host_check)
        startups = []
        for _ in range(3):
            with served(big) as seconds:
                startups.append(seconds)
        with ExitStack() as alive:
            alive.enter_context(served(big))
            alive.enter_context(served(small))
            targets = {"big": (big, "/network/ports/random"),
                       "small": (small, "/network/ports/random"),
                       "ping": (big, "/api/v1/public/ping")}
            rates: dict[str, list[float]] = {name: [] for name in targets}
            cpus: dict[str, list[float]] = {name: [] for name in targets}
            for target, path in targets.values():  # warm-up
                measure(target, path, 1, args.connections, args.tool)
            for _ in range(args.rounds):
                for name, (target, path) in targets.items():
                    sample = measure(target, path, args.seconds, args.connections, args.tool)
                    rates[name].append(sample.rate)
                    cpus[name].append(sample.cpu_us)

    med = {k: statistics.median(v) for k, v in rates.items()}
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    print(f"load: {args.tool}, rounds={args.rounds} x {args.seconds}s, {args.connections} keep-alive "
          f"connections, same headers on every request, medians; host check {args.host_check}, "
          "group commit on, firewall off")
    print(f"{'target':<48}{'req/s':>10}{'daemon CPU us/req':>20}")
    for name, label in (("big", "GET /network/ports/random, pool of 131,070"),
                        ("small", "GET /network/ports/random, pool of 100"),
                        ("ping", "GET /api/v1/public/ping (131,070 daemon)")):
        print(f"{label:<48}{med[name]:>10.0f}{cpu[name]:>20.1f}")
    print(f"ratio random(131,070) / random(100): {med['big'] / med['small']:.2f}x  (target >= 0.80)")
    print(f"ratio random(131,070) / ping:        {med['big'] / med['ping']:.2f}x  (target >= 0.85)")
    print(f"start-up with 131,070 entries (spawn to first ping), median of 3: "
          f"{statistics.median(startups):.2f}s  (target < 2 s; runs: "
          + ", ".join(f"{s:.2f}" for s in startups) + ")")


if __name__ == "__main__":
    main()
