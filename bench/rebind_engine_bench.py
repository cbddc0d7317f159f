"""Time to re-create a container with new port bindings on the real engine (adapter level).

Two rebinds, each the median of several rounds, on the Podman service of scripts/engine-up.sh
(started here if it does not answer, and stopped again at the end if this script started it):

- disjoint: the new ports differ from the old. Create the new container under a temporary name
  and start it, remove the old one, rename the new one to the old name ("swap"), then wait until
  the listener inside answers through the new host port ("reachable").
- overlapping: the new set keeps a port of the old one, so the old container must be stopped
  first (``stop(timeout=--stop-timeout)``), then the new one is created and started, the old
  removed and the new renamed. The busybox listener ignores SIGTERM as PID 1, so a stop always
  waits the whole timeout: the default 0 kills at once.

This measures the engine work only, not lightd's claim/commit around it.
Run (as root): .venv/bin/python bench/rebind_engine_bench.py [--rounds 7] [--stop-timeout 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lightd.adapters.engine import Binding, DockerEngine  # noqa: E402
from tests.engine_support import IMAGE, LISTENER, free_port, read_from, require_engine  # noqa: E402


def bind(port: int, container_port: int = 8080) -> Binding:
    return Binding("127.0.0.1", port, "tcp", container_port)


def rebind(
    engine: DockerEngine, name: str, old_id: str, new: list[Binding], stop_first: bool, t: int
) -> tuple[str, float]:
    """The service's rebind on the engine; return the new id and the seconds it took."""
    started = time.perf_counter()
    if stop_first:
        engine.stop(old_id, timeout=t)
    new_id = engine.create(f"{name}.rebind", IMAGE, LISTENER, {}, new, internal_id=name)
    engine.remove(old_id)
    engine.rename(new_id, name)
    return new_id, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--stop-timeout", type=int, default=0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the engine is rootful Podman publishing host ports")

    url, started_here = require_engine()
    name = f"lightd-bench-{os.getpid()}"
    engine = DockerEngine(url)
    figures: dict[str, list[float]] = {
        "create+start": [],
        "disjoint swap": [],
        "disjoint reachable": [],
        "overlap swap": [],
        "overlap reachable": [],
    }
    engine_id = ""
    try:
        port = free_port()
        t0 = time.perf_counter()
        engine_id = engine.create(name, IMAGE, LISTENER, {}, [bind(port)])
        figures["create+start"].append(time.perf_counter() - t0)
        read_from(port)
        for _ in range(args.rounds):
            # Disjoint: a fresh port.
            port = free_port()
            t0 = time.perf_counter()
            engine_id, took = rebind(engine, name, engine_id, [bind(port)], False, 0)
            read_from(port)
            figures["disjoint swap"].append(took)
            figures["disjoint reachable"].append(time.perf_counter() - t0)
            # Overlapping: keep the port, add one.
            t0 = time.perf_counter()
            engine_id, took = rebind(
                engine,
                name,
                engine_id,
                [bind(port), bind(free_port(), 9090)],
                True,
                args.stop_timeout,
            )
            read_from(port)
            figures["overlap swap"].append(took)
            figures["overlap reachable"].append(time.perf_counter() - t0)
            # Back to one port for the next round.
            engine_id, _ = rebind(engine, name, engine_id, [bind(free_port())], False, 0)
    finally:
        if engine_id:
            engine.remove(engine_id)
        engine.remove(f"{name}.rebind")
        engine.close()
        if started_here:
            subprocess.run(["sh", str(ROOT / "scripts" / "engine-down.sh")], check=False)

    print(f"engine {url}, image {IMAGE}, {args.rounds} rounds, stop timeout {args.stop_timeout}s")
    for label, values in figures.items():
        if values:
            print(
                f"  {label:20s} median {statistics.median(values) * 1000:7.1f} ms"
                f"  (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}, n={len(values)})"
            )


if __name__ == "__main__":
    main()
