"""A small HTTP/1.1 keep-alive load generator on asyncio, for benches against loopback only.

Each connection sends one request, reads the whole response, and sends the next: closed-loop
load, so requests/s is what the daemon sustains, not what the client can queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

__all__ = ["LoadResult", "WrkResult", "process_cpu_seconds", "run_load", "run_wrk"]


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    bodies: list[bytes] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _request(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _worker(host: str, port: int, payloads: list[bytes], stop_at: float,
                  result: LoadResult, keep_bodies: bool, max_requests: int | None) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    index = 0
    try:
        while time.perf_counter() < stop_at:
            if max_requests is not None and result.requests >= max_requests:
                return
            writer.write(payloads[index % len(payloads)])
            index += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length) if length else b""
            result.requests += 1
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status >= 400:
                result.errors += 1
            if keep_bodies:
                result.bodies.append(body)
    finally:
        writer.close()


async def run_load(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    connections: int = 32,
    seconds: float = 2.0,
    method: str = "GET",
    bodies: list[bytes] | None = None,
    keep_bodies: bool = False,
    max_requests: int | None = None,
) -> LoadResult:
    payloads = [_request(method, path, headers, b) for b in (bodies or [b""])]
    result = LoadResult()
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*[
        _worker(host, port, payloads[i::connections] or payloads, stop_at, result, keep_bodies,
                max_requests)
        for i in range(connections)
    ])
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class WrkResult:
    rate: float
    requests: int
    failed: int  # non-2xx answers


def run_wrk(url: str, headers: dict[str, str], seconds: float, connections: int,
            script: str | None = None) -> WrkResult:
    """One run of wrk (a C load generator, lighter on a shared 2-core machine than asyncio)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        if script:
            lua.write(script)
            lua.flush()
            argv += ["-s", lua.name]
        out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    requests = re.search(r"(\d+) requests in", out)
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if rate is None or requests is None:
        raise SystemExit(f"wrk printed no rate:\n{out}")
    return WrkResult(float(rate.group(1)), int(requests.group(1)),
                     int(failed.group(1)) if failed else 0)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) and of its live children (the
    daemon's store writer), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            for child in children.read().split():
                with contextlib.suppress(FileNotFoundError):  # it exited in between
                    seconds += process_cpu_seconds(int(child))
    return seconds
