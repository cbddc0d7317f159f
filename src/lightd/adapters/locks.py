"""Locks that make one lightd the only owner of a data folder and of a firewall chain.

Each lock is an exclusive ``flock`` on a small file, held through one open descriptor for the
life of the process. The kernel drops it however the process ends (a clean exit, a crash,
SIGKILL), so a restart after a crash is never blocked by a stale lock, and nothing has to be
cleaned up. The file holds the pid of its holder, which is what a refused start names.

The files are never deleted: removing a lock file while another process has it open but not yet
locked would let two processes each lock a different file under the same name.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from pathlib import Path

from lightd.errors import Conflict, Unavailable

__all__ = ["CHAIN_LOCK_DIR", "HeldLock", "hold_chain", "hold_data_folder", "netns_identity"]

DATA_LOCK_NAME = "lightd.lock"
# /run is root's and emptied at boot; the chain lock is only taken when lightd manages
# iptables, which it only does as root.
CHAIN_LOCK_DIR = Path("/run/lightd")
_PID_WAIT = 0.5  # a holder writes its pid right after it locked; give it that long


class HeldLock:
    """An flock held through ``fd`` until :meth:`release` or the end of the process."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __del__(self) -> None:  # a lock dropped unreleased (a failed build) must not linger
        self.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def _open_lock_file(path: Path) -> int:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # O_CLOEXEC: the lock must not outlive lightd in a child it started (the fd is not
    # inherited across exec). O_NOFOLLOW: never lock, or write a pid into, a planted symlink.
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)


def _holder_pid(fd: int) -> str:
    """The pid written in a lock file held by someone else, or "unknown"."""
    deadline = time.monotonic() + _PID_WAIT
    while True:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return text
        if time.monotonic() > deadline:
            return "unknown"
        time.sleep(0.02)


def _try_lock(path: Path) -> tuple[HeldLock | None, str]:
    """``(lock, "")`` when taken, else ``(None, holder pid)``."""
    fd = _open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        try:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            return None, _holder_pid(fd)
        finally:
            os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except BaseException:
        os.close(fd)
        raise
    return HeldLock(path, fd), ""


def hold_data_folder(folder: Path) -> HeldLock:
    """Lock ``folder`` (created 0700 if missing) for this process, or raise naming its holder."""
    try:
        lock, holder = _try_lock(folder / DATA_LOCK_NAME)
    except OSError as exc:
        raise Unavailable(f"cannot lock the data folder {folder}: {exc.strerror or exc}") from None
    if lock is None:
        raise Conflict(
            f"data folder {folder} is in use by another lightd (pid {holder}); "
            "stop it first or give this one another storage.base_path"
        )
    return lock


def netns_identity(netns_path: str) -> tuple[int, int]:
    """``(st_dev, st_ino)`` of a network namespace file: equal exactly for the same namespace."""
    try:
        found = os.stat(netns_path)
    except OSError as exc:
        raise Unavailable(f"cannot read the network namespace {netns_path}: {exc.strerror or exc}") from None
    return found.st_dev, found.st_ino


def _file_safe(chain: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", lambda m: f"%{ord(m.group()):02x}", chain)


def hold_chain(
    chain: str, netns_path: str = "/proc/self/ns/net", directory: Path = CHAIN_LOCK_DIR
) -> HeldLock:
    """Lock ``chain`` in the network namespace at ``netns_path``, or raise naming its holder."""
    dev, inode = netns_identity(netns_path)
    path = directory / f"firewall-{dev}-{inode}-{_file_safe(chain)}.lock"
    try:
        lock, holder = _try_lock(path)
    except OSError as exc:
        raise Unavailable(
            f"cannot lock firewall.chain {chain!r} in {path.parent}: {exc.strerror or exc}"
        ) from None
    if lock is None:
        raise Conflict(
            f"firewall.chain {chain!r} in network namespace net:[{inode}] ({netns_path}) is "
            f"managed by another lightd (pid {holder}); stop it first or give this one another "
            "firewall.chain"
        )
    return lock
