"""Pool port numbers in ``net.ipv4.ip_local_reserved_ports``, so no outgoing connection takes one.

The kernel picks the local port of an outgoing connection (``connect`` without ``bind``, on tcp
and udp, IPv4 and IPv6) from ``ip_local_port_range`` and skips the numbers listed in
``/proc/sys/net/ipv4/ip_local_reserved_ports``; a program that binds a reserved number on purpose
still can. The list belongs to the network namespace of whoever opens the file, and writing it
replaces the whole list, so lightd keeps others' numbers in it and remembers which it added
itself: a record in the data folder (``reserved_ports.json``), stamped with the boot and the
network namespace it is true for. A record of another boot or namespace describes a list the
kernel no longer holds and is ignored: then lightd claims none of the numbers it finds.

Every change reads the list, keeps what others put there (the list minus lightd's numbers), adds
the pool's numbers and writes the result once, as ranges (``1-65535`` for a full pool). The
record grows before the kernel's list does and shrinks after it, so after a crash at any point
it still names every number lightd may have added, never one somebody else did.

The kernel takes at most a page (4095 bytes) per ``write(2)``: a first write at offset 0 replaces
the list, and a write at any other offset adds to it. A list that fits one page (hundreds of
separate ranges) is swapped whole, atomically. A longer one that only grows is added to without
ever dropping a number; one that shrinks is written a page at a time, so until the last page is
in (a few system calls) the numbers of the later pages are briefly unreserved.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightd.adapters.port_set import EMPTY, PortSet, plan
from lightd.errors import Unavailable

__all__ = [
    "PORT_RANGE",
    "RECORD_NAME",
    "SYSCTL",
    "KernelReservation",
    "Unreserved",
    "detect",
    "ephemeral_range",
    "read_list",
    "read_text",
    "write_list",
]

log = logging.getLogger(__name__)

SYSCTL = "/proc/sys/net/ipv4/ip_local_reserved_ports"
PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
RECORD_NAME = "reserved_ports.json"
PAGE = 4095  # what the kernel parses of one write(2) to this file (PAGE_SIZE - 1)
_PIECE = 4000  # the pieces of a longer list, cut between ranges, each well within a page
_READ_FIRST, _READ_MOST = 1 << 14, 1 << 22  # the list of every other port is ~190 kB


# -- the kernel's file ------------------------------------------------------------------------


def read_list(path: str = SYSCTL) -> PortSet:
    return PortSet.parse(read_text(path))


def read_text(path: str = SYSCTL) -> str:
    """The kernel's list as it spells it, read in one ``read(2)``: the file answers nothing
    past offset 0."""
    size = _READ_FIRST
    while True:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, size)
        finally:
            os.close(fd)
        # The kernel ends a whole answer with a newline; a cut one has none or fills the buffer.
        if data.endswith(b"\n") and len(data) < size:
            return data.decode("ascii", "replace")
        if size >= _READ_MOST:
            raise ValueError(f"{path} did not fit in {size} bytes")
        size <<= 4


def write_list(target: PortSet, current: PortSet, path: str = SYSCTL) -> tuple[str, int]:
    """Make the kernel's list ``target`` (it holds ``current`` now); return the list as the
    kernel will spell it, and how many write(2) calls it took."""
    items = target.ranges()
    whole = ",".join(items) + "\n"  # a lone newline empties the list; "" would change nothing
    if len(whole) <= PAGE:
        pieces, offset = [whole], 0  # parsed in one go and swapped whole: atomic
    elif current <= target:
        pieces, offset = _pieces((target - current).ranges()), 1  # past offset 0: only added
    else:
        pieces, offset = _pieces(items), 0  # the first replaces the list, the rest add to it
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    calls = 0
    try:
        for piece in pieces:
            data = piece.encode("ascii")
            while data:
                done = os.pwrite(fd, data, offset)
                calls += 1
                if done <= 0:
                    raise OSError(f"the kernel took none of {len(data)} bytes")
                data, offset = data[done:], 1
    finally:
        os.close(fd)
    return whole, calls


def _pieces(items: Sequence[str]) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for item in items:
        if current and size + len(item) + 1 > _PIECE:
            pieces.append(",".join(current))
            current, size = [], 0
        current.append(item)
        size += len(item) + 1
    if current:
        pieces.append(",".join(current))
    return pieces


def ephemeral_range(path: str = PORT_RANGE) -> tuple[int, int] | None:
    """``net.ipv4.ip_local_port_range`` of this namespace, or None where it cannot be read."""
    try:
        with open(path, encoding="ascii") as text:
            low, high = (int(part) for part in text.read().split())
    except (OSError, ValueError):
        return None
    return low, high


def _identity() -> dict[str, str]:
    """What the record is true for: this boot, and the network namespace of this thread."""
    try:
        with open(BOOT_ID, encoding="ascii") as boot:
            boot_id = boot.read().strip()
        netns = os.readlink("/proc/thread-self/ns/net")
    except OSError:
        return {"boot_id": "", "netns": ""}
    return {"boot_id": boot_id, "netns": netns}


def detect(reserve: bool, path: str = SYSCTL) -> tuple[bool, str]:
    """Whether lightd can keep the reservation here; ``(on, reason)``. Writes nothing."""
    if not reserve:
        return False, "turned off in the settings (pool.reserve_ports is false)"
    if os.geteuid() != 0:
        return False, f"not running as root (effective uid {os.geteuid()})"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)  # opened and closed: nothing written
    except OSError as exc:
        return False, f"{path} cannot be written ({exc.strerror or exc})"
    os.close(fd)
    netns = _identity()["netns"] or "this network namespace"
    return True, f"enabled: running as root, {path} of {netns} is writable"


# -- warnings for ports nobody reserves ---------------------------------------------------


def _risk(ports: Sequence[int], why: str, port_range: str) -> list[str]:
    bounds = ephemeral_range(port_range)
    if bounds is None:
        return []
    low, high = bounds
    inside = PortSet.of(p for p in ports if low <= p <= high)
    if not inside:
        return []
    items = inside.ranges()
    shown = ",".join(items[:10]) + (f" and {len(items) - 10} more ranges" if len(items) > 10 else "")
    one = len(inside) == 1
    return [
        f"{'port' if one else 'ports'} {shown} {'is' if one else 'are'} inside the kernel's "
        f"ephemeral port range {low}-{high} (net.ipv4.ip_local_port_range) and lightd does not "
        f"reserve {'it' if one else 'them'} ({why}): any outgoing connection of this host may "
        f"take {'it' if one else 'one'} as its local port, and a server started on it then fails "
        "with 'address already in use'. Let lightd reserve them (pool.reserve_ports, "
        "as root) or use ports outside that range"
    ]


class Unreserved:
    """The reservation when lightd cannot keep one (not root, the file read-only): it only warns."""

    enabled = False

    def __init__(self, reason: str, port_range: str = PORT_RANGE) -> None:
        self.reason = reason
        self.port_range = port_range

    def apply(self, wanted: bytes) -> None:
        return None

    def warnings(self, ports: Sequence[int]) -> list[str]:
        return _risk(ports, self.reason, self.port_range)

    def status(self) -> dict[str, Any]:
        return {"enabled": False, "reason": self.reason, "count": 0}


class _Record:
    """The numbers lightd added to the list itself, in ``reserved_ports.json``.

    Rewritten by one ``pwrite(2)`` at offset 0 on a file kept open, padded with spaces (which
    JSON ignores) to the longest text written so far: a process killed at any moment leaves the
    old record or the new one, never a mix. No fsync: after a power loss the kernel's list is
    gone too, and a record of another boot is ignored.
    """

    ABOUT = "ports lightd added to net.ipv4.ip_local_reserved_ports; it removes only these"

    def __init__(self, path: Path, keep: bool) -> None:
        self.path = path
        self.keep = keep  # False: once empty, the file goes (pool.reserve_ports turned off)
        self.identity: dict[str, str] = {}
        self._fd: int | None = None
        self._size = 0

    def load(self) -> PortSet:
        """What a previous run added, if its record is true for this boot and namespace."""
        self.identity = _identity()
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return EMPTY
        except (OSError, ValueError) as exc:
            return self._unknown(f"unreadable ({exc})")
        if not isinstance(raw, dict) or not isinstance(raw.get("ports"), str):
            return self._unknown("not lightd's record")
        if not all(self.identity.values()) or any(
            raw.get(key) != value for key, value in self.identity.items()
        ):
            log.info("%s is of another boot or network namespace: ignored", self.path)
            return EMPTY
        try:
            return PortSet.parse(raw["ports"])
        except ValueError as exc:
            return self._unknown(f"unreadable ({exc})")

    def _unknown(self, why: str) -> PortSet:
        # Better to leave a number reserved until the next boot than to drop somebody else's.
        log.warning("%s %s: none of the reserved ports is taken as lightd's", self.path, why)
        return EMPTY

    def save(self, ours: PortSet) -> None:
        if not ours and not self.keep:
            self.close()
            self.path.unlink(missing_ok=True)
            return
        text = json.dumps({**self.identity, "ports": ours.text(), "about": self.ABOUT})
        data = text.encode("utf-8")
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._size = os.fstat(self._fd).st_size
        written = os.pwrite(self._fd, data.ljust(self._size), 0)
        if written < max(len(data), self._size):
            raise OSError(f"{self.path}: short write")
        self._size = max(self._size, len(data))
        if self._size > len(data) + (1 << 16):  # after a long list shrank: the padding goes
            os.ftruncate(self._fd, len(data))
            self._size = len(data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class KernelReservation:
    """Satisfies :class:`lightd.service.ports.ReservedPorts` with the kernel's list.

    With ``reserve`` false (``pool.reserve_ports`` off, but the file writable) the first
    :meth:`apply` takes back the numbers a previous run added, and nothing is reserved after.
    """

    def __init__(
        self,
        record: Path,
        *,
        reserve: bool = True,
        reason: str = "enabled",
        sysctl: str = SYSCTL,
        port_range: str = PORT_RANGE,
        on_count: Callable[[int], None] | None = None,
    ) -> None:
        self.enabled = reserve
        self.record = record
        self.reason = reason
        self.sysctl = sysctl
        self.port_range = port_range
        self.on_count = on_count
        self._ours: PortSet | None = None  # None until the first apply() read the record
        self._count = 0
        self._others = 0
        self._started: dict[str, Any] | None = None
        self._last_error: str | None = None
        self._record = _Record(record, keep=reserve)
        self._seen: tuple[str, PortSet] = ("", EMPTY)

    def apply(self, wanted: bytes) -> None:
        """Reserve exactly the numbers flagged in ``wanted`` for the pool, keeping others'."""
        if not self.enabled and self._ours is not None and not self._ours:
            return  # turned off, and nothing of ours is left to take back
        try:
            self._apply(PortSet.of_flags(wanted) if self.enabled else EMPTY)
        except (OSError, ValueError) as exc:
            self._last_error = f"{self.sysctl} could not be changed: {exc}"
            raise Unavailable(self._last_error) from None
        self._last_error = None

    def _apply(self, wanted: PortSet) -> None:
        text = read_text(self.sysctl)
        # The list as lightd last saw or wrote it is not parsed again.
        current = self._seen[1] if text == self._seen[0] else PortSet.parse(text)
        self._seen = (text, current)
        first = self._ours is None
        ours = self._record.load() if self._ours is None else self._ours
        self._ours = ours
        others = current - ours
        target, mine = plan(current, ours, wanted)
        grown = ours | mine
        if grown != ours:  # named before the kernel lists them: a crash leaks nothing
            self._record.save(grown)
            self._ours = grown
        if target != current:
            self._seen = ("", EMPTY)  # unknown, should the write fail halfway
            self._seen = (write_list(target, current, self.sysctl)[0], target)
        if mine != grown:  # forgotten only once the kernel dropped them
            self._record.save(mine)
        self._ours = mine
        self._count, self._others = len(wanted), len(others)
        if self.on_count is not None:
            self.on_count(self._count)
        if first:
            self._started = {
                "kept_others": self._others,
                "found_ours": len(ours & current),
                "reserved": self._count,
                "list": _shown(target),
            }
            what = "reconciled" if self.enabled else "taken back (turned off)"
            log.info("reserved ports %s: %s", what, self._started)

    def warnings(self, ports: Sequence[int]) -> list[str]:
        if not self.enabled:
            return _risk(ports, self.reason, self.port_range)
        if self._last_error is not None:
            return _risk(ports, f"the last change failed: {self._last_error}", self.port_range)
        return []

    def status(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "reason": self.reason,
            "count": self._count,
            "others": self._others,
            "record": str(self.record),
            "started": self._started,
            "last_error": self._last_error,
        }


def _shown(ports: PortSet, limit: int = 200) -> str:
    text = ports.text()
    return text if len(text) <= limit else text[: limit - 3] + "..."
