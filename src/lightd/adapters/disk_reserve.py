"""A few MiB of the data folder's disk kept back, so the pool can still be read and shrunk when
the disk is full.

On a full disk SQLite cannot even read a WAL database whose ``-shm`` file must be created first,
nor commit a delete (its WAL frames need room too). The store keeps ``lightd.reserve`` beside the
database and removes it only for that: to open the database, or to retry a transaction that only
frees entries. While the disk is full (the reserve is missing and cannot be made again, or less
than LOW_WATER is free besides), transactions that may add data are refused ("disk full"), so
they never eat the room the next delete will need.

The file's blocks are allocated (``posix_fallocate``: ext4, XFS, btrfs and tmpfs really set them
aside; where the file system cannot, the C library writes zeros, which a compressing file system
may store in nothing) and fsynced under a temporary name first, so a reserve that exists is whole.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

__all__ = ["RESERVE_NAME", "RESERVE_SIZE", "DiskReserve", "is_no_space"]

log = logging.getLogger(__name__)

RESERVE_NAME = "lightd.reserve"
RESERVE_SIZE = 4 << 20
LOW_WATER = 1 << 20
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def is_no_space(exc: OSError) -> bool:
    return exc.errno in _NO_SPACE


class DiskReserve:
    def __init__(self, folder: Path, size: int = RESERVE_SIZE) -> None:
        self.path = folder / RESERVE_NAME
        self.size = size
        # Set when the reserve cannot be made for a reason other than room (a read-only or
        # foreign folder): lightd then runs without one rather than refusing every change.
        self.broken: str | None = None

    def exists(self) -> bool:
        return self.path.exists()

    def free_bytes(self) -> int:
        stats = os.statvfs(self.path.parent)
        return stats.f_bavail * stats.f_frsize

    def shortfall(self, make: bool = False) -> str | None:
        """Why changes that add data must be refused now, or None when they may be saved.

        They may while the reserve exists (``make``: is made now if missing and there is room)
        and more than LOW_WATER is free besides.
        """
        folder = self.path.parent
        try:
            free = self.free_bytes()
        except OSError as exc:
            return f"cannot tell the free space of {folder}: {exc}"
        if self.broken is None and not self.exists():
            if free < self.size:
                return (
                    f"{free // 1024} KiB free in {folder}, less than the "
                    f"{self.size >> 20} MiB lightd keeps in reserve there for deletions"
                )
            if not make:
                return None  # the next change makes it
            try:
                self._write()
                free = self.free_bytes()
            except OSError as exc:
                if is_no_space(exc):
                    return f"no room left in {folder} for lightd's reserve for deletions"
                self.broken = f"cannot create {self.path}: {exc}"
                log.warning("running without a disk space reserve: %s", self.broken)
                return None
        if free < LOW_WATER:
            return (
                f"{free // 1024} KiB free in {folder}, less than the "
                f"{LOW_WATER >> 20} MiB lightd keeps free before it adds data"
            )
        return None

    def problem(self) -> str | None:
        """For a status page: why only reads and deletions are saved, or None."""
        shortfall = self.shortfall()
        if shortfall is None:
            return None
        return f"disk full: {shortfall}, so only reads and deletions are saved until space is freed"

    def release(self) -> bool:
        """Give the reserve's room back to the disk; False when there was none to give."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("disk full: released the %d MiB reserve %s", self.size >> 20, self.path)
        return True

    def _write(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)  # blocks allocated, none written
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename too must survive a crash
        finally:
            os.close(folder)
