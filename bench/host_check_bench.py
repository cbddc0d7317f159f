"""How long the host check takes: one snapshot of the socket tables, and one question to it.

    .venv/bin/python bench/host_check_bench.py [--listeners N] [--connections N]

First on the host as it is, then with N extra loopback listeners and N extra established loopback
connections (each connection is two sockets), to show how the cost grows with the tables. Prints
the sock_diag netlink path and the /proc/net fallback side by side, and a snapshot limited to
a typical pool range (the kernel filters the sockets, see ``BoundIndex``).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import resource
import socket
import statistics
import time
from collections.abc import Callable, Iterator

from lightd.adapters import host

POOL_RANGE = (25565, 27030)  # a typical game-server pool, below the ephemeral range


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of one call."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def ports_held() -> int:
    index = host.snapshot()
    return sum(len(index.ports(protocol)) for protocol in ("tcp", "udp"))


@contextlib.contextmanager
def crowd(listeners: int, connections: int) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for _ in range(listeners):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        server = stack.enter_context(socket.socket())
        server.bind(("127.0.0.1", 0))
        server.listen(4096)
        for _ in range(connections):
            client = stack.enter_context(socket.socket())
            client.connect(server.getsockname())
            accepted, _ = server.accept()
            stack.enter_context(accepted)
        yield


def report(label: str, repeat: int) -> None:
    index = host.snapshot()
    netlink = timed(lambda: [host._tables_from_sock_diag(p) for p in ("tcp", "udp")], repeat)
    proc = timed(lambda: [host._tables_from_proc(p) for p in ("tcp", "udp")], repeat)
    snap = timed(host.snapshot, repeat)
    ranged = timed(lambda: host.snapshot(ports=POOL_RANGE), repeat)
    candidates = [("0.0.0.0", random.randint(1024, 65535)) for _ in range(10_000)]
    started = time.perf_counter()
    for ip, port in candidates:
        index.is_bound(ip, port, "tcp")
    per_check = (time.perf_counter() - started) / len(candidates)
    print(
        f"{label:<32} ports held {ports_held():>5}  snapshot {snap * 1e3:7.2f} ms"
        f"   (netlink {netlink * 1e3:7.2f} ms, /proc {proc * 1e3:7.2f} ms)"
        f"   ports={POOL_RANGE[0]}-{POOL_RANGE[1]} {ranged * 1e3:6.2f} ms"
        f"   is_bound {per_check * 1e9:4.0f} ns   {'/'.join(sorted(set(index.sources.values())))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", type=int, default=2_000)
    parser.add_argument("--connections", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    needed = args.listeners + 2 * args.connections + 100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    print(f"{args.repeat} runs each, median; one snapshot reads tcp and udp, IPv4 and IPv6")
    report("this host as it is", args.repeat)
    with crowd(args.listeners, args.connections):
        report(f"+{args.listeners} listeners +{args.connections} conns", args.repeat)
    started = time.perf_counter()
    addresses = host.local_addresses()
    took = (time.perf_counter() - started) * 1e3
    print(f"local_addresses() {len(addresses)} addresses in {took:.2f} ms")


if __name__ == "__main__":
    main()
