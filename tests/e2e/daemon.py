"""Run a real ``lightd serve`` process for tests and benches, and stop only that process."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.ports import quiet_port

__all__ = ["ServedDaemon", "free_port"]


def free_port() -> int:
    """The daemon's port: outside the ephemeral range, so no outgoing connection takes it first."""
    return quiet_port()


def refuse_host_reservation(config: Path, prefix: list[str]) -> None:
    """A root daemon in the host's own network namespace would keep its pool in the host's
    net.ipv4.ip_local_reserved_ports (pool.reserve_ports is on unless the config says false)."""
    if os.geteuid() != 0 or any(arg.startswith("--net=") for arg in prefix):
        return
    try:
        raw = json.loads(config.read_text())
        pool = raw.get("pool") if isinstance(raw, dict) else None
    except (OSError, ValueError):
        return  # not a config lightd could start with
    if not isinstance(pool, dict) or pool.get("reserve_ports") is not False:
        raise RuntimeError(
            f"{config}: a test daemon in the host's network namespace must have "
            "pool.reserve_ports false (write_test_config's pool section has it), or run in a "
            "private namespace (prefix nsenter --net=...)"
        )


class ServedDaemon:
    def __init__(self, config: Path, port: int | None = None, log: Path | None = None,
                 prefix: list[str] | None = None, tls: ssl.SSLContext | None = None,
                 env: dict[str, str] | None = None) -> None:
        """``tls``: the daemon serves HTTPS (api.tls in its config), verified with this context;
        ``env``: variables added to the process's environment (a bench runs older code so)."""
        self.env = env or {}
        self.config = config
        self.port = port or free_port()
        self.verify: ssl.SSLContext | bool = tls if tls is not None else True
        self.url = f"{'http' if tls is None else 'https'}://127.0.0.1:{self.port}"
        self.log = log or config.parent / "lightd.log"
        self.prefix = prefix or []
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> float:
        """Start the process; return seconds until it answered ping."""
        refuse_host_reservation(self.config, self.prefix)
        lightd = Path(sys.executable).with_name("lightd")
        argv = [*self.prefix, str(lightd), "serve", "--config", str(self.config),
                "--port", str(self.port)]
        started = time.perf_counter()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"lightd exited with {self.process.returncode}: {self.tail()}")
            try:
                ping = httpx.get(self.url + "/api/v1/public/ping", timeout=0.5, verify=self.verify)
                if ping.status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"lightd did not answer within {timeout}s: {self.tail()}")

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM, as an init system would; wait for a clean exit."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL: a crash at an arbitrary moment."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=15)

    def children(self) -> list[int]:
        """Pids of the daemon's child processes (its store writer)."""
        assert self.process is not None
        pids: list[int] = []
        for task in os.listdir(f"/proc/{self.process.pid}/task"):
            with open(f"/proc/{self.process.pid}/task/{task}/children") as listed:
                pids += [int(pid) for pid in listed.read().split()]
        return pids


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
