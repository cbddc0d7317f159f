"""What the event stream costs every change: claims/s of this tree next to an older one's.

Every change now writes the event that tells of it in its own transaction (a row, its JSON), and
keeps it in memory for subscribers, even when nobody listens. This bench puts a number on that:
two real `lightd serve` processes, alike in every setting, one running this tree's code and one
the code of ``--before`` (default 3884a2e, the last commit before leases and events; checked out
into a temporary git worktree, and run with PYTHONPATH pointing at it), no subscribers. Each
round gets a fresh pair on 131,070 entries (0.0.0.0:1-65535 tcp and udp, seeded by each daemon
itself, as the older schema is not this one's) and serves ``POST /network/ports/claim`` (count 1,
tcp and udp in turn) in slices ordered now, before, before, now (before, now, now, before in odd
rounds). Printed: medians of claims/s and of the daemon's CPU time per claim, each round's
ratio now/before and their median.

Loopback only. Run: .venv/bin/python bench/events_cost_bench.py [--rounds 6] [--before REV]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_common_options, measure, served  # noqa: E402
from tests.conftest import write_test_config  # noqa: E402
from tests.e2e.daemon import ServedDaemon  # noqa: E402

CLAIM = "/network/ports/claim"
CLAIM_BODIES = [b'{"count": 1, "protocol": "tcp"}', b'{"count": 1, "protocol": "udp"}']
ROOT = Path(__file__).resolve().parent.parent
FULL = [{"ip": "0.0.0.0", "ports": "1-65535", "protocol": "both"}]


def daemon(folder: Path, source: Path | None, host_check: bool) -> ServedDaemon:
    config = write_test_config(folder, api={"access_log": False},
                               pool={"initial_ports": FULL, "host_check": host_check})
    env = {} if source is None else {"PYTHONPATH": str(source / "src")}
    return ServedDaemon(config, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(parser, connections=32)
    parser.set_defaults(rounds=6, seconds=2.0)
    parser.add_argument("--before", default="3884a2e", help="the older commit to compare with")
    args = parser.parse_args()
    host_check = args.host_check == "on"
    rates: dict[bool, list[float]] = {True: [], False: []}
    cpus: dict[bool, list[float]] = {True: [], False: []}
    ratios: list[float] = []
    with tempfile.TemporaryDirectory() as base:
        before = Path(base) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(before),
                        args.before], check=True)
        try:
            for round_number in range(args.rounds):
                now = daemon(Path(base) / f"now{round_number}", None, host_check)
                old = daemon(Path(base) / f"old{round_number}", before, host_check)
                first, second = (now, old) if round_number % 2 == 0 else (old, now)
                with served(first), served(second):
                    for target in (now, old):  # warm-up
                        measure(target, CLAIM, 1, args.connections, args.tool, bodies=CLAIM_BODIES)
                    order = [(now, True), (old, False), (old, False), (now, True)]
                    if round_number % 2:
                        order = [(old, False), (now, True), (now, True), (old, False)]
                    total = {True: 0.0, False: 0.0}
                    for target, is_now in order:
                        sample = measure(target, CLAIM, args.seconds, args.connections, args.tool,
                                         bodies=CLAIM_BODIES)
                        rates[is_now].append(sample.rate)
                        cpus[is_now].append(sample.cpu_us)
                        total[is_now] += sample.rate
                    ratios.append(total[True] / total[False])
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)],
                           check=False)
    print(
        f"load: {args.tool}, rounds={args.rounds} x 2 x {args.seconds}s per daemon, "
        f"{args.connections} keep-alive connections, POST {CLAIM} count 1 (tcp/udp in turn), "
        f"medians; a fresh pair of daemons of 131,070 entries per round; host check "
        f"{args.host_check}, fsync'd group commit on, firewall off, no stream subscribers"
    )
    print(f"{'code':<34}{'claims/s':>10}{'CPU us/claim':>14}")
    for is_now, label in ((False, f"before ({args.before})"), (True, "now (this tree)")):
        print(f"{label:<34}{statistics.median(rates[is_now]):>10.0f}"
              f"{statistics.median(cpus[is_now]):>14.1f}")
    print("rounds' own ratios now/before: " + ", ".join(f"{r:.3f}" for r in ratios)
          + f"  (median {statistics.median(ratios):.3f})")


if __name__ == "__main__":
    main()
