"""Issue 5's figure: the time of a rebind through lightd's API on the real engine (Podman).

Starts `lightd serve` on the Podman service (scripts/engine-up.sh is run if it is not up),
creates a busybox container whose listener answers on a pool port, then rebinds it back and forth
between ports: to a fresh port each time (the old container keeps running until the new one is
up) and onto a set that shares a port with the old one (the old one must stop first). Prints the
median wall time of the POST .../rebind-network call and until the listener answers on the new
port. Run as root: .venv/bin/python bench/rebind_bench.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import served  # noqa: E402
from tests.conftest import HEADERS, write_test_config  # noqa: E402
from tests.e2e.daemon import ServedDaemon  # noqa: E402
from tests.engine_support import IMAGE, LISTENER, free_port, read_from, require_engine  # noqa: E402


def engine_down() -> None:
    """Stop the Podman service that require_engine() started, as rebind_engine_bench.py does."""
    subprocess.run(["sh", str(ROOT / "scripts" / "engine-down.sh")], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    url, started_here = require_engine()
    with ExitStack() as cleanup:  # undone in reverse: container, client, daemon, folder, engine
        if started_here:
            cleanup.callback(engine_down)
        folder = cleanup.enter_context(tempfile.TemporaryDirectory())
        config = write_test_config(Path(folder), pool={"initial_ports": []},
                                   runtime={"kind": "docker", "socket": url, "stop_timeout": 0})
        daemon = ServedDaemon(config)
        cleanup.enter_context(served(daemon))
        client = cleanup.enter_context(httpx.Client(base_url=daemon.url, headers=HEADERS, timeout=120))
        name = f"bench-rebind-{int(time.time())}"
        try:
            ports = [free_port() for _ in range(args.rounds + 2)]
            for port in ports:
                client.post("/network/ports", json={"ip": "127.0.0.1", "port": port}).raise_for_status()
            created = client.post("/containers", json={
                "internal_id": name, "image": IMAGE, "startup_command": LISTENER,
                "ports": [{"ip": "127.0.0.1", "port": ports[0], "container_port": 8080}]})
            created.raise_for_status()
            results: dict[str, tuple[list[float], list[float]]] = {"disjoint": ([], []),
                                                                    "shared": ([], [])}
            current = [ports[0]]
            for index in range(1, args.rounds + 1):
                # Alternate: move to a fresh port, then to a set that keeps that port and adds one.
                kind = "disjoint" if index % 2 else "shared"
                wanted = [ports[index]] if kind == "disjoint" else [current[0], ports[index]]
                body = {"ports": [{"ip": "127.0.0.1", "port": p, "container_port": 8080 + i}
                                  for i, p in enumerate(wanted)]}
                started = time.perf_counter()
                client.post(f"/containers/{name}/rebind-network", json=body).raise_for_status()
                answered = time.perf_counter()
                assert read_from(wanted[0]).startswith(b"hello")
                reachable = time.perf_counter()
                results[kind][0].append(answered - started)
                results[kind][1].append(reachable - started)
                current = wanted
        finally:
            client.delete(f"/containers/{name}")
    print(f"rebind through POST /containers/{{id}}/rebind-network on {url}, medians")
    print(f"{'case':<44}{'runs':>5}{'call s':>10}{'reachable s':>14}")
    for kind, label in (("disjoint", "new ports only (old runs until new is up)"),
                        ("shared", "keeps a port (old stops first)")):
        calls, reach = results[kind]
        if calls:
            print(f"{label:<44}{len(calls):>5}{statistics.median(calls):>10.3f}"
                  f"{statistics.median(reach):>14.3f}")
    every = results["disjoint"][0] + results["shared"][0]
    print(f"all rebinds: median {statistics.median(every):.3f}s over {len(every)} runs")


if __name__ == "__main__":
    main()
