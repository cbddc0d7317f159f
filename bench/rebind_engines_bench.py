"""Issue 11's figure: rebind, create and delete through lightd's API on Podman and Docker Engine.

One `lightd serve` per engine (runtime.kind docker on that engine's socket, pool entries on
0.0.0.0 as the seed uses them). Docker Engine publishes in its own network namespace, so its
daemon is started, and all its traffic sent, from inside that namespace (setns(2) on the main
thread, tests.engine_support.inside); Podman's are the host's.

In each of --cycles cycles, on each engine: create a container (busybox listener) on a pool port,
wait until it answers, rebind it --rebinds/--cycles times to the next 0.0.0.0 port (new ports
only, so the old container runs until the new one is up), waiting each time until the listener
answers on the new port, then delete it. Engines alternate step by step, and which goes first
swaps every round, since the machine is shared and noisy. Prints per engine the median, p90,
min and max of the POST .../rebind-network wall time, the median until the listener answered
after it, the create and delete medians, and docker/podman ratios of the medians.

Engines are brought up by scripts/engine-up.sh and scripts/docker-up.sh unless given
(--podman URL, --docker URL --docker-netns PATH), and stopped at the end if this run started
them. Run as root: .venv/bin/python bench/rebind_engines_bench.py [--engines podman,docker]
[--rebinds 15] [--cycles 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import served  # noqa: E402
from tests.conftest import HEADERS, write_test_config  # noqa: E402
from tests.e2e.daemon import ServedDaemon  # noqa: E402
from tests.engine_support import (  # noqa: E402
    IMAGE,
    LISTENER,
    EngineTarget,
    free_port,
    inside,
    read_from,
    require_docker,
    require_podman,
)

DOWN = {"podman": "engine-down.sh", "docker": "docker-down.sh"}


@dataclass
class Run:
    """One engine's daemon, its container's ports, and the figures taken on it."""

    target: EngineTarget
    client: httpx.Client
    ports: list[int]
    name: str
    at: int = 0  # index in ports of the port the container is on
    figures: dict[str, list[float]] = field(
        default_factory=lambda: {"rebind": [], "reachable": [], "create": [], "delete": []}
    )

    def binding(self) -> list[dict[str, Any]]:
        return [{"ip": "0.0.0.0", "port": self.ports[self.at], "container_port": 8080}]

    def timed(self, label: str, call: Callable[[], httpx.Response]) -> float:
        started = time.perf_counter()
        call().raise_for_status()
        took = time.perf_counter() - started
        self.figures[label].append(took)
        return started

    def create(self) -> None:
        body = {
            "internal_id": self.name,
            "image": IMAGE,
            "startup_command": LISTENER,
            "ports": self.binding(),
        }
        self.timed("create", lambda: self.client.post("/containers", json=body))
        read_from(self.ports[self.at])

    def rebind(self) -> None:
        self.at = (self.at + 1) % len(self.ports)
        body = {"ports": self.binding()}
        started = self.timed(
            "rebind", lambda: self.client.post(f"/containers/{self.name}/rebind-network", json=body)
        )
        assert read_from(self.ports[self.at]).startswith(b"hello")
        self.figures["reachable"].append(time.perf_counter() - started)

    def delete(self) -> None:
        self.timed("delete", lambda: self.client.delete(f"/containers/{self.name}"))


def target_of(kind: str, args: argparse.Namespace, cleanup: ExitStack) -> EngineTarget:
    """The engine given on the command line, or the one its up script brings up."""
    given = args.podman if kind == "podman" else args.docker
    if given:
        netns = args.docker_netns if kind == "docker" else None
        if kind == "docker" and not netns:
            sys.exit("--docker needs --docker-netns: Docker Engine publishes in its own namespace")
        return EngineTarget(kind, given, netns)
    try:
        target, started = require_podman() if kind == "podman" else require_docker()
    except pytest.skip.Exception as exc:  # the fixtures' skip: say why and stop
        sys.exit(f"{kind}: {exc.msg}")
    if started:
        script = str(ROOT / "scripts" / DOWN[kind])
        cleanup.callback(lambda: subprocess.run(["sh", script], check=False, capture_output=True))
    return target


def start(target: EngineTarget, cleanup: ExitStack) -> Run:
    """A daemon on ``target``, started where the engine publishes; its pool on 0.0.0.0."""
    folder = Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
    config = write_test_config(
        folder,
        pool={"initial_ports": []},
        api={"access_log": False},
        runtime={"kind": "docker", "socket": target.url, "stop_timeout": 0},
    )
    daemon = ServedDaemon(config)
    with inside(target):
        cleanup.enter_context(served(daemon))
        client = cleanup.enter_context(httpx.Client(base_url=daemon.url, headers=HEADERS, timeout=120))
        ports = [free_port("tcp", "0.0.0.0") for _ in range(3)]
        for port in ports:
            client.post("/network/ports", json={"ip": "0.0.0.0", "port": port}).raise_for_status()
    run = Run(target, client, ports, f"bench-rebind-{target.kind}-{os.getpid()}")

    def remove_left_over() -> None:  # a run cut short leaves its container behind otherwise
        with inside(target):
            client.delete(f"/containers/{run.name}")

    cleanup.callback(remove_left_over)
    return run


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]


def report(runs: list[Run], rebinds: int, cycles: int) -> None:
    print(
        f"rebind through POST /containers/{{id}}/rebind-network, one 0.0.0.0 tcp port, image {IMAGE};"
        f" {rebinds} rebinds and {cycles} create/delete per engine"
        f"{', engines alternating' if len(runs) > 1 else ''}; seconds"
    )
    print(
        f"{'engine':<8}{'rebinds':>8}{'median':>9}{'p90':>9}{'min':>9}{'max':>9}"
        f"{'reachable':>11}{'create':>9}{'delete':>9}"
    )
    medians: dict[str, dict[str, float]] = {}
    for run in runs:
        f = run.figures
        medians[run.target.kind] = {k: statistics.median(v) for k, v in f.items()}
        m = medians[run.target.kind]
        print(
            f"{run.target.kind:<8}{len(f['rebind']):>8}{m['rebind']:>9.3f}{p90(f['rebind']):>9.3f}"
            f"{min(f['rebind']):>9.3f}{max(f['rebind']):>9.3f}{m['reachable']:>11.3f}"
            f"{m['create']:>9.3f}{m['delete']:>9.3f}"
        )
    if {"podman", "docker"} <= medians.keys():
        d, p = medians["docker"], medians["podman"]
        print(
            f"{'docker/podman':<16}{d['rebind'] / p['rebind']:>9.2f}x{'':>27}"
            f"{d['reachable'] / p['reachable']:>10.2f}x{d['create'] / p['create']:>8.2f}x"
            f"{d['delete'] / p['delete']:>8.2f}x"
        )
    for run in runs:
        print(
            f"{run.target.kind}: {run.target.url}"
            + (f" in {run.target.netns}" if run.target.netns else " (the host's namespace)")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--engines", default="podman,docker", help="comma-separated, from podman and docker (default both)"
    )
    parser.add_argument("--rebinds", type=int, default=15, help="rebinds per engine")
    parser.add_argument(
        "--cycles", type=int, default=3, help="create/delete per engine; the rebinds are spread over them"
    )
    parser.add_argument("--podman", metavar="URL", help="Podman's Docker API socket (default: engine-up.sh)")
    parser.add_argument("--docker", metavar="URL", help="Docker Engine's socket (default: docker-up.sh)")
    parser.add_argument("--docker-netns", metavar="PATH", help="the namespace Docker Engine publishes in")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.engines.split(",") if k.strip()]
    if not kinds or set(kinds) - set(DOWN):
        sys.exit(f"--engines takes podman and/or docker, not {args.engines!r}")
    if os.geteuid() != 0:
        sys.exit("run as root: the engines are rootful and publish host ports")
    if args.cycles < 1 or args.rebinds < args.cycles:
        sys.exit("--rebinds must be at least --cycles, and --cycles at least 1")

    with ExitStack() as cleanup:  # undone in reverse: containers, clients, daemons, engines
        targets = [target_of(kind, args, cleanup) for kind in kinds]
        runs = [start(target, cleanup) for target in targets]
        step = 0

        def each(action: Callable[[Run], None]) -> None:
            """``action`` on every engine, the first engine swapping every step."""
            nonlocal step
            order = runs if step % 2 == 0 else runs[::-1]
            step += 1
            for run in order:
                with inside(run.target):
                    action(run)

        for cycle in range(args.cycles):
            share = args.rebinds // args.cycles + (cycle < args.rebinds % args.cycles)
            each(Run.create)
            for _ in range(share):
                each(Run.rebind)
            each(Run.delete)
        report(runs, args.rebinds, args.cycles)


if __name__ == "__main__":
    main()
