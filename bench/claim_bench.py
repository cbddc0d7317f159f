"""Issue 3's figures, in one run against real `lightd serve` processes.

- durable claims per second (POST /network/ports/claim, count 1) with 64 concurrent keep-alive
  clients, next to the same daemon's ping rate, the daemon's CPU time per request of each, and
  how many ports were handed out twice;
- the time to add 0.0.0.0:1-65535/tcp in one POST /network/ports/bulk (firewall off).

Medians over rounds, since the machine is shared. Loopback only.
Run: .venv/bin/python bench/claim_bench.py [--rounds 5] [--seconds 2] [--host-check off]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_common_options, full_range, make_daemon, measure, served  # noqa: E402
from tests.conftest import HEADERS  # noqa: E402

CLAIM = "/network/ports/claim"
PING = "/api/v1/public/ping"
# Claims alternate between tcp and udp over 0.0.0.0:1-65535 (131,070 entries). Each round gets a
# fresh daemon on a fresh copy of that pool, so no round runs out of free ports.
CLAIM_BODIES = [b'{"count": 1, "protocol": "tcp"}', b'{"count": 1, "protocol": "udp"}']


def range_add_seconds() -> float:
    with tempfile.TemporaryDirectory() as folder:
        daemon = make_daemon(Path(folder), [])
        with served(daemon):
            started = time.perf_counter()
            response = httpx.post(daemon.url + "/network/ports/bulk", headers=HEADERS, timeout=60,
                                  json={"ip": "0.0.0.0", "protocol": "tcp", "ports": ["1-65535"]})
            took = time.perf_counter() - started
            assert response.status_code == 201 and response.json()["added_count"] == 65535
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(parser, connections=64)
    args = parser.parse_args()

    claims, pings, claim_cpu, ping_cpu = [], [], [], []
    answered = 0
    for round_number in range(args.rounds):
        with tempfile.TemporaryDirectory() as folder:
            daemon = make_daemon(Path(folder), full_range(), args.host_check == "on")
            with served(daemon):
                measure(daemon, PING, 1, args.connections, args.tool)  # warm-up
                # Claims first on even rounds, ping first on odd ones: neither gets the fresher
                # half of the round on a machine whose speed drifts.
                for target in (CLAIM, PING) if round_number % 2 == 0 else (PING, CLAIM):
                    if target == CLAIM:
                        sample = measure(daemon, CLAIM, args.seconds, args.connections,
                                         args.tool, bodies=CLAIM_BODIES)
                        claims.append(sample.rate)
                        claim_cpu.append(sample.cpu_us)
                        answered += sample.requests
                    else:
                        sample = measure(daemon, PING, args.seconds, args.connections, args.tool)
                        pings.append(sample.rate)
                        ping_cpu.append(sample.cpu_us)
                if round_number == args.rounds - 1:
                    # One more round that keeps every answer, to count ports handed out twice.
                    kept = measure(daemon, CLAIM, args.seconds, args.connections, "python",
                                   bodies=CLAIM_BODIES, keep_bodies=True).bodies
                    marked = httpx.get(daemon.url + "/network/ports?in_use=true",
                                       headers=HEADERS, timeout=60).json()["total"]
                    transactions = httpx.get(daemon.url + "/api/v1/status", headers=HEADERS,
                                             timeout=60).json()["pool"]["transactions"]
    handed = [(p["ip"], p["port"], p["protocol"]) for body in kept
              for p in orjson.loads(body)["ports"]]
    duplicates = sum(n - 1 for n in Counter(handed).values() if n > 1)
    adds = [range_add_seconds() for _ in range(3)]

    claim_rate, ping_rate = statistics.median(claims), statistics.median(pings)
    paired = [claim / ping for claim, ping in zip(claims, pings, strict=True)]
    print(f"load: {args.tool}, rounds={args.rounds} x {args.seconds}s, {args.connections} concurrent "
          f"keep-alive clients, medians; a fresh daemon per round (claims and ping, order "
          f"alternating); fsync'd group commit on, host check {args.host_check}")
    print(f"{'target':<50}{'req/s':>10}{'daemon CPU us/req':>20}")
    print(f"{'durable claims (POST /network/ports/claim)':<50}{claim_rate:>10.0f}"
          f"{statistics.median(claim_cpu):>20.1f}")
    print(f"{'GET /api/v1/public/ping (same daemon)':<50}{ping_rate:>10.0f}"
          f"{statistics.median(ping_cpu):>20.1f}")
    print(f"ratio claims / ping, median of the rounds' own ratios: "
          f"{statistics.median(paired):.2f}x  (target >= 0.50; rounds: "
          + ", ".join(f"{r:.2f}" for r in paired) + f"; ratio of the medians: "
          f"{claim_rate / ping_rate:.2f}x)")
    print(f"daemon CPU per request, claim / ping: "
          f"{statistics.median(claim_cpu) / statistics.median(ping_cpu):.2f}x")
    print(f"claims answered: {answered} in the timed rounds; bodies checked: {len(handed)} "
          f"ports, handed out twice: {duplicates}  (must be 0); in use afterwards: {marked}")
    print(f"last round's daemon: {transactions} transactions for {marked} claims, "
          f"{marked / max(transactions, 1):.1f} claims per fsync'd transaction")
    print("add 0.0.0.0:1-65535/tcp in one call, median of 3: "
          f"{statistics.median(adds):.3f}s  (target < 1 s; runs: "
          + ", ".join(f"{a:.3f}" for a in adds) + ")")


if __name__ == "__main__":
    main()
