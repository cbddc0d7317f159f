"""Opening 65,535 ports: one iptables-restore batch vs one iptables process per rule.

Run as root: ``.venv/bin/python bench/firewall_bench.py``. The script re-executes itself under
``unshare --net`` and refuses to measure unless it sits in a network namespace of its own, so the
host's firewall is never touched; both methods then run iptables directly, with no nsenter in the
way, as the daemon would.

- batch: ``IptablesFirewall.open()`` of 65,535 tcp entries (reads the table, one restore), the
  median of 3 runs after one uncounted warm-up run; the chain is torn down between runs and the
  kernel given a few seconds to free the torn-down rules before the next timed run.
- one process per rule: 1,000 ``iptables -A`` processes on an empty chain, extrapolated to 65,535.
  Each exec gets slower as the chain grows (iptables reads the chain first), so 250 more are timed
  at each of four chain lengths up to 64,535 and the per-exec cost is integrated over 0..65,535;
  that is the figure the ratio uses. The straight-line figure from the empty chain is printed too,
  as a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

from lightd.adapters.iptables import IptablesFirewall
from lightd.core.entry import Entry

PORTS = 65535
RUNS = 3
PER_RULE = 1000
GROWTH_POINTS = (16384, 32768, 49152, 64535)
GROWTH_EACH = 250
SETTLE = 3.0
TARGET_SECONDS = 1.5
TARGET_RATIO = 500
CHAIN = "LIGHTD"


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def lightd_rules() -> int:
    return sum(1 for line in run("iptables-save", "-t", "filter").splitlines()
               if line.startswith(f"-A {CHAIN} "))  # fmt: skip


async def reset() -> None:
    """No chain, no jump: every run starts from an untouched table.

    The adapter's teardown drops INPUT's jumps to the chain, flushes it and deletes it; every rule
    this bench adds carries lightd's tag, so no foreign rule keeps the chain alive."""
    await IptablesFirewall(CHAIN).teardown()
    assert f":{CHAIN} " not in run("iptables-save", "-t", "filter"), "teardown left the chain"


def entries(ports: range, protocol: str = "tcp") -> list[Entry]:
    return [Entry("0.0.0.0", port, protocol) for port in ports]


async def timed_open(pool: list[Entry]) -> float:
    fw = IptablesFirewall(CHAIN)
    start = time.perf_counter()
    await fw.open(pool)
    return time.perf_counter() - start


def per_rule(ports: range) -> float:
    """Seconds per ``iptables -A`` process, one process per rule, as the original daemon did."""
    start = time.perf_counter()
    for port in ports:
        subprocess.run(
            ["iptables", "-A", CHAIN, "-p", "tcp", "--dport", str(port),
             "-m", "comment", "--comment", "lightd", "-j", "ACCEPT"],
            check=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    return (time.perf_counter() - start) / len(ports)


def integrate(points: list[tuple[float, float]], total: int) -> float:
    """Sum of per-exec cost over chain lengths 0..total-1, piecewise linear between samples."""
    points = sorted(points)
    points = [(0.0, points[0][1]), *points, (float(total), points[-1][1])]
    seconds = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        seconds += (x1 - x0) * (y0 + y1) / 2
    return seconds


def backend() -> str:
    return run("iptables", "--version").strip()


async def inside(host_ns: str) -> int:
    if os.readlink("/proc/self/ns/net") == host_ns:
        print("refusing to run: not inside a private network namespace", file=sys.stderr)
        return 2
    pool = entries(range(1, PORTS + 1))
    print(f"firewall bench in a private network namespace ({os.readlink('/proc/self/ns/net')})")
    print(f"  {backend()}, kernel {platform.release()}, {os.cpu_count()} CPUs")

    await reset()
    warm_up = await timed_open(pool)  # loads the kernel modules and warms the caches; not counted
    batch: list[float] = []
    for _ in range(RUNS):
        await reset()
        # Flushing 65,535 rules leaves the kernel freeing them in a worker for a second or two;
        # on a small host that work would otherwise run during the timed batch.
        time.sleep(SETTLE)
        batch.append(await timed_open(pool))
        assert lightd_rules() == PORTS, "the batch did not leave 65,535 rules"
    batch_median = statistics.median(batch)

    # Extra figures the daemon's callers see at that size (not part of the comparison).
    fw = IptablesFirewall(CHAIN)
    start = time.perf_counter()
    again = await fw.reconcile(pool)
    reconcile_s = time.perf_counter() - start
    assert (again["added"], again["removed"]) == (0, 0)
    start = time.perf_counter()
    await fw.open(entries(range(1, 2), "udp"))
    one_s = time.perf_counter() - start
    start = time.perf_counter()
    await fw.close(pool)
    close_s = time.perf_counter() - start
    assert lightd_rules() == 1

    await reset()
    run("iptables", "-N", CHAIN)
    first = per_rule(range(1, PER_RULE + 1))
    assert lightd_rules() == PER_RULE
    samples = [(PER_RULE / 2, first)]
    for length in GROWTH_POINTS:
        await reset()
        await IptablesFirewall(CHAIN).open(entries(range(1, length + 1)))
        samples.append((length + GROWTH_EACH / 2, per_rule(range(length + 1, length + 1 + GROWTH_EACH))))
    await reset()
    linear = first * PORTS
    grown = integrate(samples, PORTS)
    measured = PER_RULE + GROWTH_EACH * len(GROWTH_POINTS)

    print()
    runs = ", ".join(f"{t:.3f}" for t in batch)
    print(f"batch: open {PORTS:,} tcp ports, one iptables-restore --noflush")
    print(f"  median of {RUNS} runs: {batch_median:.3f} s   (runs: {runs} s)")
    print(f"  (each run from an empty table, {SETTLE:g} s after the previous flush; "
          f"an uncounted warm-up run took {warm_up:.3f} s)")  # fmt: skip
    print(f"one iptables -A process per rule ({measured:,} execs measured)")
    print(f"  {PER_RULE:,} rules on an empty chain: {first * PER_RULE:.3f} s "
          f"({first * 1000:.2f} ms per exec)")  # fmt: skip
    for middle, cost in samples[1:]:
        print(f"  {GROWTH_EACH} rules at chain length {int(middle - GROWTH_EACH / 2):,}: "
              f"{cost * 1000:.2f} ms per exec")  # fmt: skip
    print(f"  extrapolated to {PORTS:,}: {grown:.1f} s with the measured growth "
          f"(straight line from the empty chain: {linear:.1f} s)")  # fmt: skip
    print()
    print(f"{'':26}{'batch':>12}{'per rule':>14}{'ratio':>10}")
    print(f"{'65,535 ports, growth':26}{batch_median:>10.3f} s{grown:>12.1f} s"
          f"{grown / batch_median:>9.0f}x")  # fmt: skip
    print(f"{'65,535 ports, straight':26}{batch_median:>10.3f} s{linear:>12.1f} s"
          f"{linear / batch_median:>9.0f}x")  # fmt: skip
    print()
    ok_time = batch_median < TARGET_SECONDS
    ok_ratio = grown / batch_median >= TARGET_RATIO
    print(f"target batch < {TARGET_SECONDS} s: {'met' if ok_time else 'MISSED'} "
          f"({batch_median:.3f} s)")  # fmt: skip
    print(f"target >= {TARGET_RATIO}x faster than one process per rule: "
          f"{'met' if ok_ratio else 'MISSED'} ({grown / batch_median:.0f}x)")  # fmt: skip
    print()
    print(f"at {PORTS:,} rules: reconcile in step {reconcile_s:.3f} s, open 1 port "
          f"{one_s:.3f} s, close all {PORTS:,} in one batch {close_s:.3f} s")  # fmt: skip
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inside", metavar="HOST_NS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        return asyncio.run(inside(args.inside))
    if os.geteuid() != 0:
        print("run as root: the bench creates a network namespace (unshare --net)", file=sys.stderr)
        return 2
    missing = [t for t in ("unshare", "iptables", "iptables-save", "iptables-restore")
               if shutil.which(t) is None]  # fmt: skip
    if missing:
        print(f"missing on PATH: {', '.join(missing)}", file=sys.stderr)
        return 2
    host_ns = os.readlink("/proc/self/ns/net")
    argv = ["unshare", "--net", "--", sys.executable, os.path.abspath(__file__), "--inside", host_ns]
    return subprocess.run(argv, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
