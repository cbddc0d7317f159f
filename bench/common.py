"""What the benches share: a daemon on a prepared pool, and one measured round of load."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import process_cpu_seconds, run_load, run_wrk
from lightd.adapters.sqlite_store import SqliteStore
from lightd.core.changes import PutPort
from tests.conftest import HEADERS, write_test_config
from tests.e2e.daemon import ServedDaemon

__all__ = ["DEFAULT_TOOL", "Sample", "add_common_options", "full_range", "make_daemon", "measure",
           "served"]

DEFAULT_TOOL = "wrk" if shutil.which("wrk") else "python"


def add_common_options(parser: Any, connections: int) -> None:
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=connections)
    parser.add_argument("--tool", choices=["wrk", "python"], default=DEFAULT_TOOL,
                        help="load generator: wrk (apt-get install wrk) or bench/loadgen.py")
    parser.add_argument("--host-check", choices=["on", "off"], default="on",
                        help="pool.host_check of the daemons (default on, as shipped)")


def make_daemon(folder: Path, entries: list[PutPort], host_check: bool = True,
                writer: str = "process") -> ServedDaemon:
    config = write_test_config(folder, api={"access_log": False},
                               pool={"host_check": host_check}, storage={"writer": writer})
    store = SqliteStore(folder / "data" / "lightd.sqlite3")
    store.open()
    store.apply(entries)
    store.close()
    return ServedDaemon(config)


@contextmanager
def served(daemon: ServedDaemon) -> Iterator[float]:
    """Start ``daemon`` (from :func:`make_daemon`, or any ServedDaemon) and stop it on leaving,
    however the block ends, also when the start itself fails. Yields the seconds from spawn until
    it answered ping; ``with served(daemon):`` may run again on the same daemon."""
    try:
        yield daemon.start()
    finally:
        daemon.stop()


def full_range() -> list[PutPort]:
    return [PutPort("0.0.0.0", port, proto, False, None, None)
            for proto in ("tcp", "udp") for port in range(1, 65536)]


@dataclass
class Sample:
    rate: float  # requests/s
    requests: int  # answered in the round
    cpu_us: float  # the daemon's CPU time (all threads) per answered request
    bodies: list[bytes]  # kept only by the python load generator with keep_bodies


def _wrk_script(bodies: list[bytes]) -> str:
    """POST the bodies in turn."""
    quoted = ", ".join("'" + body.decode() + "'" for body in bodies)
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"local bodies = {{{quoted}}}\n"
        "local n = 0\n"
        "request = function()\n"
        "  n = n + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[n % #bodies + 1])\n"
        "end\n"
    )


def measure(daemon: ServedDaemon, path: str, seconds: float, connections: int, tool: str,
            bodies: list[bytes] | None = None, keep_bodies: bool = False) -> Sample:
    """One round of closed-loop load; the same two headers on every path (ping ignores them).

    ``bodies`` makes the requests POSTs of those bodies, in turn. Any non-2xx answer stops the
    bench, since a figure over failed requests would mean nothing.
    """
    assert daemon.process is not None
    before = process_cpu_seconds(daemon.process.pid)
    if tool == "wrk" and not keep_bodies:
        result = run_wrk(daemon.url + path, HEADERS, seconds, connections,
                         _wrk_script(bodies) if bodies else None)
        rate, requests, failed, kept = result.rate, result.requests, result.failed, []
    else:
        loaded = asyncio.run(run_load("127.0.0.1", daemon.port, path, HEADERS, connections,
                                      seconds, method="POST" if bodies else "GET",
                                      bodies=bodies, keep_bodies=keep_bodies))
        rate, requests, failed, kept = loaded.rate, loaded.requests, loaded.errors, loaded.bodies
    if failed:
        raise SystemExit(f"{path}: {failed} of {requests} requests failed")
    cpu = process_cpu_seconds(daemon.process.pid) - before
    return Sample(rate, requests, 1e6 * cpu / max(requests, 1), kept)
