"""Issue 3's figures, in one run against real `lightd serve` processes.

- durable claims per second (POST /network/ports/claim, count 1) with 64 concurrent keep-alive
  clients, next to the same daemon's ping rate, and how many ports were handed out twice;
- the time to add 0.0.0.0:1-65535/tcp in one POST /network/ports/bulk (firewall off).

Medians over rounds, since the machine is shared. Loopback only.
Run: .venv/bin/python bench/claim_bench.py [--rounds 5] [--seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import run_load  # noqa: E402
from bench.pool_bench import full_range, make_daemon  # noqa: E402
from tests.conftest import HEADERS  # noqa: E402


def claim_round(daemon, seconds: float, connections: int) -> tuple[float, list[tuple]]:
    result = asyncio.run(run_load(
        "127.0.0.1", daemon.port, "/network/ports/claim", HEADERS, connections, seconds,
        method="POST", bodies=CLAIM_BODIES, keep_bodies=True,
    ))
    if result.errors:
        raise SystemExit(f"claims failed: {result.statuses}")
    claimed = []
    for body in result.bodies:
        for port in orjson.loads(body)["ports"]:
            claimed.append((port["ip"], port["port"], port["protocol"]))
    return result.rate, claimed


def ping_round(daemon, seconds: float, connections: int, tool: str) -> float:
    if tool == "wrk":
        return wrk_run(daemon.url + "/api/v1/public/ping", seconds, connections)[0]
    return asyncio.run(run_load("127.0.0.1", daemon.port, "/api/v1/public/ping", HEADERS,
                                connections, seconds)).rate


CLAIM_BODIES = [b'{"count": 1, "protocol": "tcp"}', b'{"count": 1, "protocol": "udp"}']
WRK_CLAIM = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {'{"count": 1, "protocol": "tcp"}', '{"count": 1, "protocol": "udp"}'}
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[n % 2 + 1])
end
"""


def wrk_run(url: str, seconds: float, connections: int, script: str | None = None
            ) -> tuple[float, int, int]:
    """(requests/s, requests, non-2xx answers) from one wrk run."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    for name, value in HEADERS.items():
        argv += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        if script:
            lua.write(script)
            lua.flush()
            argv += ["-s", lua.name]
        out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, requests, int(failed.group(1)) if failed else 0


def claim_round_wrk(daemon, seconds: float, connections: int) -> tuple[float, int]:
    """wrk does not keep bodies: every 2xx claimed exactly one port, counted afterwards."""
    rate, requests, failed = wrk_run(daemon.url + "/network/ports/claim", seconds, connections,
                                     WRK_CLAIM)
    if failed:
        raise SystemExit(f"{failed} claims failed")
    return rate, requests


def range_add_seconds() -> float:
    with tempfile.TemporaryDirectory() as folder:
        daemon = make_daemon(Path(folder), [])
        daemon.start()
        try:
            started = time.perf_counter()
            response = httpx.post(daemon.url + "/network/ports/bulk", headers=HEADERS, timeout=60,
                                  json={"ip": "0.0.0.0", "protocol": "tcp", "ports": ["1-65535"]})
            took = time.perf_counter() - started
            assert response.status_code == 201 and response.json()["added_count"] == 65535
        finally:
            daemon.stop()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--tool", choices=["wrk", "python"],
                        default="wrk" if shutil.which("wrk") else "python",
                        help="load generator: wrk (apt-get install wrk) or bench/loadgen.py")
    args = parser.parse_args()

    claims, pings, everything = [], [], []
    answered = 0
    with tempfile.TemporaryDirectory() as folder:
        # 0.0.0.0:1-65535, tcp and udp; claims alternate between the two protocols, so 131,070
        # entries last the whole run even at 10,000 claims/s.
        daemon = make_daemon(Path(folder), full_range())
        daemon.start()
        try:
            ping_round(daemon, 1, args.connections, args.tool)
            for _ in range(args.rounds):
                if args.tool == "wrk":
                    rate, count = claim_round_wrk(daemon, args.seconds, args.connections)
                    answered += count
                else:
                    rate, claimed = claim_round(daemon, args.seconds, args.connections)
                    everything += claimed
                    answered += len(claimed)
                claims.append(rate)
                pings.append(ping_round(daemon, args.seconds, args.connections, args.tool))
            if not everything:  # wrk keeps no bodies: one more round that does, for duplicates
                _, claimed = claim_round(daemon, args.seconds, args.connections)
                everything += claimed
            marked = httpx.get(daemon.url + "/network/ports?in_use=true", headers=HEADERS,
                               timeout=60).json()["total"]
        finally:
            daemon.stop()
    duplicates = sum(n - 1 for n in Counter(everything).values() if n > 1)
    adds = [range_add_seconds() for _ in range(3)]

    claim_rate, ping_rate = statistics.median(claims), statistics.median(pings)
    print(f"load: {args.tool}, rounds={args.rounds} x {args.seconds}s, {args.connections} concurrent "
          "keep-alive clients, medians; fsync'd group commit and host check on")
    print(f"{'durable claims/s (POST /network/ports/claim)':<50}{claim_rate:>10.0f}")
    print(f"{'GET /api/v1/public/ping/s (same daemon)':<50}{ping_rate:>10.0f}")
    print(f"ratio claims / ping: {claim_rate / ping_rate:.2f}x  (target >= 0.50)")
    print(f"claims answered: {answered} in the timed rounds; bodies checked: {len(everything)} "
          f"ports, handed out twice: {duplicates}  (must be 0); in use afterwards: {marked}")
    print("add 0.0.0.0:1-65535/tcp in one call, median of 3: "
          f"{statistics.median(adds):.3f}s  (target < 1 s; runs: "
          + ", ".join(f"{a:.3f}" for a in adds) + ")")


if __name__ == "__main__":
    main()
