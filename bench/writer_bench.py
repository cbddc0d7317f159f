"""Why the SQLite store writes from a child process: durable claims/s, writer thread vs process.

Each round starts two fresh `lightd serve` daemons on the same prepared pool (0.0.0.0:1-65535,
tcp and udp), one with `storage.writer: "thread"` and one with `"process"` (the default), in
alternating order, and drives each with the same load as claim_bench.py: POST
/network/ports/claim, count 1, from 64 concurrent keep-alive clients. It prints the medians side
by side, the daemon's CPU time per claim (its writer process included), and the process / thread
ratio of each round. Loopback only.

Run: .venv/bin/python bench/writer_bench.py [--rounds 5] [--seconds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.claim_bench import CLAIM, CLAIM_BODIES, PING  # noqa: E402
from bench.common import add_common_options, full_range, make_daemon, measure, served  # noqa: E402

WRITERS = ("thread", "process")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(parser, connections=64)
    args = parser.parse_args()

    rates: dict[str, list[float]] = {writer: [] for writer in WRITERS}
    cpu: dict[str, list[float]] = {writer: [] for writer in WRITERS}
    for round_number in range(args.rounds):
        order = WRITERS if round_number % 2 == 0 else WRITERS[::-1]
        for writer in order:
            with tempfile.TemporaryDirectory() as folder:
                daemon = make_daemon(Path(folder), full_range(), args.host_check == "on",
                                     writer=writer)
                with served(daemon):
                    measure(daemon, PING, 1, args.connections, args.tool)  # warm-up
                    sample = measure(daemon, CLAIM, args.seconds, args.connections, args.tool,
                                     bodies=CLAIM_BODIES)
            rates[writer].append(sample.rate)
            cpu[writer].append(sample.cpu_us)

    paired = [p / t for p, t in zip(rates["process"], rates["thread"], strict=True)]
    print(f"load: {args.tool}, rounds={args.rounds} x {args.seconds}s, {args.connections} concurrent "
          f"keep-alive clients claiming one port each time, a fresh daemon per writer and round, "
          f"medians; host check {args.host_check}")
    print(f"{'storage.writer':<20}{'claims/s':>10}{'daemon CPU us/claim':>22}")
    for writer in WRITERS:
        print(f"{writer:<20}{statistics.median(rates[writer]):>10.0f}"
              f"{statistics.median(cpu[writer]):>22.1f}")
    print(f"process / thread, median of the rounds' own ratios: {statistics.median(paired):.2f}x "
          "(rounds: " + ", ".join(f"{r:.2f}" for r in paired) + ")")


if __name__ == "__main__":
    main()
