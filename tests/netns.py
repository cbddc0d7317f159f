"""A private network namespace for tests and the benchmark, so they never touch the host's firewall.

``NetNs`` starts ``unshare --net -- sleep infinity`` as a child process, waits until that child
really sits in a new network namespace (its ``/proc/<pid>/ns/net`` differs from ours), and hands
out ``prefix`` = ``["nsenter", "--net=/proc/<pid>/ns/net", "--"]`` for every command meant for that
namespace. ``close()`` kills that one child, by its pid; the namespace goes with it.

``entered(path)`` runs the calling thread inside an existing network namespace (one with a path,
such as Docker Engine's /run/netns/lightd-docker from scripts/docker-up.sh) until the block
ends: setns(2) there, setns(2) back to where it was. Threads and child processes started
meanwhile are born in that namespace.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import pytest

__all__ = ["NetNs", "entered", "missing_requirements", "net_namespace", "private_netns"]

REQUIRED_TOOLS = ("iptables", "iptables-save", "iptables-restore", "unshare", "nsenter")
IPV6_TOOLS = ("ip6tables", "ip6tables-save", "ip6tables-restore")
PACKAGES = {"unshare": "util-linux", "nsenter": "util-linux"}


def missing_requirements(tools: tuple[str, ...] = REQUIRED_TOOLS) -> str | None:
    """Why real-iptables tests cannot run here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not running as root (real iptables tests need root to create a network namespace)"
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        packages = sorted({PACKAGES.get(tool, "iptables") for tool in missing})
        return f"missing on PATH: {', '.join(missing)} (Debian: apt-get install {' '.join(packages)})"
    return None


class NetNs:
    """A throw-away network namespace held open by one ``sleep`` child."""

    def __init__(self, start_timeout: float = 10.0) -> None:
        self.own_ns = os.readlink("/proc/self/ns/net")
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--", "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.pid = self.proc.pid
        self.path = f"/proc/{self.pid}/ns/net"
        deadline = time.monotonic() + start_timeout
        # unshare execs sleep only after it left our namespace; until then the child's ns link
        # still names ours, and a command run through the prefix would hit the host's firewall.
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self._reap()
                raise RuntimeError(f"unshare --net failed: {err.strip() or 'no error output'}")
            try:
                entered = os.readlink(self.path) != self.own_ns and self._comm() == "sleep"
            except OSError:
                entered = False
            if entered:
                break
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("unshare --net did not start a namespace in time")
            time.sleep(0.005)
        self.ns = os.readlink(self.path)
        self.prefix = ["nsenter", f"--net={self.path}", "--"]

    def _comm(self) -> str:
        with open(f"/proc/{self.pid}/comm") as f:
            return f.read().strip()

    def check(self) -> None:
        """Refuse to go on unless the child still holds the namespace we started."""
        if self.proc.poll() is not None or os.readlink(self.path) != self.ns or self.ns == self.own_ns:
            raise RuntimeError("the test namespace is gone; refusing to run iptables")

    def run(self, *argv: str, input: str | None = None, check: bool = True) -> str:
        """Run one command inside the namespace and return its stdout."""
        self.check()
        done = subprocess.run([*self.prefix, *argv], input=input, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def save(self, family: int = 4) -> list[str]:
        """The filter table's chain and rule lines, as ``iptables-save`` prints them."""
        tool = "iptables-save" if family == 4 else "ip6tables-save"
        text = self.run(tool, "-t", "filter")
        return [line for line in text.splitlines() if line.startswith(("-A ", ":"))]

    def rules(self, chain: str, family: int = 4) -> list[str]:
        return [line for line in self.save(family) if line.startswith(f"-A {chain} ")]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self._reap()

    def _reap(self) -> None:
        self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()

    def __enter__(self) -> NetNs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def private_netns() -> Iterator[NetNs]:
    """For a fixture: a private namespace, or a skip naming what is missing (a failure in CI)."""
    reason = missing_requirements() or missing_requirements(IPV6_TOOLS)
    if reason is None:
        try:
            space = NetNs()
        except (OSError, RuntimeError) as exc:
            reason = f"cannot create a private network namespace: {exc}"
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the real iptables tests cannot run: {reason}")
        pytest.skip(reason)
    with space:
        yield space


CLONE_NEWNET = 0x40000000  # <sched.h>: setns(2) to a network namespace


def _setns(fd: int) -> None:
    """setns(fd, CLONE_NEWNET) for the calling thread (os.setns is new in Python 3.12)."""
    setns = getattr(os, "setns", None)
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def net_namespace() -> str:
    """The calling thread's network namespace, as its /proc link names it (``net:[inode]``)."""
    return os.readlink("/proc/thread-self/ns/net")


@contextmanager
def entered(path: str) -> Iterator[str]:
    """Run the calling (main) thread in the network namespace at ``path`` until the block ends.

    Yields the namespace's name (``net:[inode]``). Refuses a path that names the thread's own
    namespace: code that means to be isolated must not silently run on the host's network. On
    the way out the thread always returns to the namespace it came from, also when the block
    raises; if that fails the process cannot go on safely, and the error says so.

    Only the main thread: /proc/net (what ``ss`` and most tools read) follows it, and a thread
    pool made before the block would keep running in the old namespace.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("entered() switches the main thread only")
    home_name = net_namespace()
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        inside = net_namespace()
        try:
            if inside == home_name:
                raise RuntimeError(f"{path} is this thread's own network namespace {home_name}")
            yield inside
        finally:
            try:
                _setns(home)
            except OSError as exc:  # pragma: no cover - the kernel refusing our own namespace
                raise RuntimeError(f"cannot return to network namespace {home_name}: {exc}") from exc
            if net_namespace() != home_name:  # pragma: no cover
                raise RuntimeError(f"returned to {net_namespace()}, not {home_name}")
    finally:
        os.close(home)
