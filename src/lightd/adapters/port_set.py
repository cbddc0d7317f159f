"""Sets of port numbers as the kernel's bitmap sysctls hold them, and their ranges text.

A set is one 65,536-bit integer (bit ``p`` for port ``p``), so union, difference and comparison
of two sets take a microsecond or two whatever they hold. Sets are made from runs of numbers and
turned back into runs, and the work there is per run (found with ``str.find``, at C speed), not
per number: a pool of every port from 1 to 65535 is one run, ``1-65535``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

__all__ = ["EMPTY", "PORTS", "PortSet", "plan"]

PORTS = 65536  # port numbers 0-65535 (the kernel's bitmap has 0 too)
_ITEM = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")
Run = tuple[int, int]
_FEW_RUNS = 64  # up to here a set is made run by run; past it, digit by digit (~150 us)
_DIGITS = bytes.maketrans(b"\x00\x01", b"01")


class PortSet:
    """An immutable set of port numbers 0-65535."""

    __slots__ = ("bits",)

    def __init__(self, bits: int = 0) -> None:
        if not 0 <= bits < 1 << PORTS:
            raise ValueError("a port set holds the numbers 0 to 65535")
        self.bits = bits

    # -- making one ------------------------------------------------------------------------

    @classmethod
    def of_runs(cls, runs: Iterable[Run]) -> PortSet:
        """The numbers of ``(low, high)`` runs (both ends included), in any order."""
        packed = bytearray(PORTS // 8)
        for low, high in runs:
            if not 0 <= low <= high < PORTS:
                raise ValueError(f"not a range of ports: {low}-{high}")
            first, last = low >> 3, high >> 3
            if first == last:
                packed[first] |= ((1 << (high - low + 1)) - 1) << (low & 7)
            else:
                packed[first] |= (0xFF << (low & 7)) & 0xFF
                packed[first + 1 : last] = b"\xff" * (last - first - 1)
                packed[last] |= (1 << ((high & 7) + 1)) - 1
        return cls(int.from_bytes(packed, "little"))

    @classmethod
    def of(cls, ports: Iterable[int]) -> PortSet:
        return cls.of_runs((port, port) for port in ports)

    @classmethod
    def of_flags(cls, flags: bytes | bytearray) -> PortSet:
        """The numbers whose byte is 1 in ``flags`` (65,536 bytes, one per number, each 0 or 1)."""
        if len(flags) != PORTS:
            raise ValueError(f"port flags are {PORTS} bytes, not {len(flags)}")
        runs = []
        for run in _runs(flags.decode("latin-1"), "\x01", "\x00"):
            runs.append(run)
            if len(runs) > _FEW_RUNS:
                break
        else:  # the usual pool: a handful of ranges, made run by run
            return cls.of_runs(runs)
        # Many runs: as binary digits, highest number first, at C speed whatever the runs
        # (int() refuses a byte other than 0 or 1, which would be no digit).
        return cls(int(bytes(flags).translate(_DIGITS)[::-1], 2))

    @classmethod
    def parse(cls, text: str) -> PortSet:
        """The kernel's spelling (``"8080,40000-40049\\n"``, or just a newline for none)."""
        text = text[:-1] if text.endswith("\n") else text
        runs = []
        for item in text.split(",") if text else ():
            match = _ITEM.fullmatch(item)
            if match is None:
                raise ValueError(f"not a port or a range of ports: {item[:40]!r}")
            low = int(match[1])
            runs.append((low, int(match[2]) if match[2] else low))
        return cls.of_runs(runs)

    # -- reading one -----------------------------------------------------------------------

    def runs(self) -> list[Run]:
        """Every run of consecutive numbers, ``(low, high)``, in order."""
        return list(_runs(bin(self.bits)[:1:-1], "1", "0"))  # bit 0 first

    def ranges(self) -> list[str]:
        """``["8080", "40000-40049"]``: each run as the kernel writes it."""
        return [str(low) if low == high else f"{low}-{high}" for low, high in self.runs()]

    def text(self) -> str:
        return ",".join(self.ranges())

    def __or__(self, other: PortSet) -> PortSet:
        return PortSet(self.bits | other.bits)

    def __and__(self, other: PortSet) -> PortSet:
        return PortSet(self.bits & other.bits)

    def __sub__(self, other: PortSet) -> PortSet:
        return PortSet(self.bits & ~other.bits)

    def __le__(self, other: PortSet) -> bool:
        return self.bits & ~other.bits == 0

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and 0 <= port < PORTS and (self.bits >> port) & 1 == 1

    def __len__(self) -> int:
        return self.bits.bit_count()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PortSet) and self.bits == other.bits

    def __hash__(self) -> int:
        return hash(self.bits)

    def __repr__(self) -> str:
        text = self.text()
        return f"PortSet({text[:60] + '...' if len(text) > 60 else text!r})"


EMPTY = PortSet()


def _runs(sequence: str, one: str, zero: str) -> Iterator[Run]:
    """The runs of ``one`` in ``sequence`` (index = number), a few C-speed finds per run."""
    size = len(sequence)
    low = sequence.find(one)
    while low >= 0:
        end = sequence.find(zero, low)
        yield low, (size if end < 0 else end) - 1
        low = -1 if end < 0 else sequence.find(one, end)


def plan(current: PortSet, ours: PortSet, wanted: PortSet) -> tuple[PortSet, PortSet]:
    """The list to write and the numbers lightd then owns in it.

    ``current`` is the kernel's list, ``ours`` what lightd put there before, ``wanted`` the
    pool's numbers. Everything else in ``current`` is somebody else's and stays; a wanted number
    somebody else reserved already stays theirs, so removing it from the pool leaves it listed.
    """
    others = current - ours
    return others | wanted, wanted - others
