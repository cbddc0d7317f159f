"""Choosing entries to claim: several at random, tcp+udp pairs, and runs of consecutive ports.

Nothing here changes the pool. ``reject`` lets the caller refuse entries the pool thinks are free
(for example a port some other process has bound on the host).

The work is bounded by what a claim asks for, not by the size of the pool:

- what the pool's counts cannot meet (available entries of a protocol, tcp+udp pairs; see
  :class:`Pool`) is refused before anything is drawn;
- entries are drawn without replacement: a partial Fisher-Yates shuffle over the pool's index of
  available entries, its swaps kept in a dict so the index itself is only read. No candidate is
  drawn twice, so ``count`` entries cost ``count`` draws plus the ones ``reject`` refuses, and
  drawing every candidate proves that no more are there: no rescan, nothing quadratic;
- pairs are drawn the same way from the smaller of the two protocols' indexes, keeping numbers
  that are free on the other protocol too;
- nothing chosen conflicts: over several ips, a wildcard entry is left out while an entry of a
  specific ip of the same number is free (lightd.core.pool, "Availability");
- a run of consecutive numbers is found in the pool's free-port maps with ``bytes.find``, at C
  speed: at most 64 kB per ip, whatever ``count``.

:func:`choose` answers at once. A :class:`Picker` answers a bounded number of draws at a time,
for a claim that takes what each step returns before the next one and lets other tasks run in
between (``PoolService.claim``).
"""

from __future__ import annotations

import random
import sys

from lightd.core.entry import Entry, is_wildcard
from lightd.core.pool import PORTS, Pool, Reject

__all__ = ["UNBOUNDED", "Picker", "Restart", "choose"]

UNBOUNDED = sys.maxsize

Item = list[Entry]


class Restart(Exception):
    """The run being taken was broken since the last step: give back what was taken of it, then
    go on stepping (a new run is looked for)."""


def choose(
    pool: Pool,
    rng: random.Random,
    count: int,
    protocols: tuple[str, ...],
    ip: str | None = None,
    contiguous: bool = False,
    reject: Reject | None = None,
) -> list[Item] | None:
    """``count`` port numbers, each as one entry per protocol, or None when there are not enough.

    With one protocol every item is a single entry; with ("tcp", "udp") each item is the tcp and
    the udp entry of one ip:port. With ``contiguous`` the numbers are consecutive on one ip.
    """
    if count == 1 and len(protocols) == 1:  # the common claim, kept cheap
        entry = pool.random(rng, ip=ip, protocol=protocols[0], reject=reject)
        return None if entry is None else [[entry]]
    picker = Picker(pool, rng, count, protocols, ip, contiguous, reject)
    chosen: list[Item] = []  # each step checks the pool's counts before it draws
    while picker.wanted:
        items = picker.step(UNBOUNDED)  # one step unless a run had to be looked for again
        if items is None:
            return None
        chosen += items
    return chosen


class Picker:
    """The choice of one claim, made a bounded number of draws at a time.

    Each :meth:`step` looks at the pool as it is now; the caller takes (marks in use) what a step
    returns before asking for the next, so it leaves the pool's index of available entries and is
    never returned twice. ``wanted`` is how many numbers are still to be found.
    """

    def __init__(
        self,
        pool: Pool,
        rng: random.Random,
        count: int,
        protocols: tuple[str, ...],
        ip: str | None = None,
        contiguous: bool = False,
        reject: Reject | None = None,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.pairs = len(protocols) > 1
        if self.pairs and sorted(protocols) != ["tcp", "udp"]:
            raise ValueError(f"protocols must be one protocol, or tcp and udp: {protocols}")
        self.pool = pool
        self.rng = rng
        self.count = count
        self.protocols = protocols
        self.ip = ip
        self.reject = reject
        self.contiguous = contiguous and count > 1
        self.wanted = count
        # ip:port that ``reject`` refused: never asked about again, and left out of the counts.
        self._refused: set[tuple[str, int]] = set()
        # Contiguous: the run being taken, as ip, its first port, the next port to take.
        self._run: tuple[str, int] | None = None
        self._next = 0

    def possible(self) -> bool:
        """Whether the pool's counts leave room for what is still wanted (O(1): nothing drawn)."""
        return self._room() >= self.wanted

    def _room(self) -> int:
        if self.pairs:
            return self.pool.pair_count(self.ip)
        return self.pool.available_count(self.protocols[0], self.ip)

    def step(self, budget: int) -> list[Item] | None:
        """What at most ``budget`` draws find now (possibly nothing), or None when what is still
        wanted cannot be had. A contiguous claim may raise :class:`Restart` instead."""
        if self.contiguous:
            return self._step_run(budget)
        return self._step_draws(budget)

    # -- numbers drawn at random ---------------------------------------------------------------

    def _step_draws(self, budget: int) -> list[Item] | None:
        pool, refused, reject = self.pool, self._refused, self.reject
        if self.pairs:
            tcp, udp = pool.candidates("tcp", self.ip), pool.candidates("udp", self.ip)
            members = tcp if len(tcp) <= len(udp) else udp
        else:
            members = pool.candidates(self.protocols[0], self.ip)
        room = self._room()
        if refused and room - len(refused) < self.wanted:
            room -= sum(1 for ip, port in refused if self._still_free(ip, port))
        if room < self.wanted:
            return None
        total = len(members)
        draws = min(total, budget)
        # Over every ip, a wildcard and a specific ip of one number must not both be taken: the
        # wildcard is left out while the specific one is free (it gives the same number, and
        # taking it never costs the claim another), so nothing drawn conflicts and None stays
        # exact. (A specific entry ``reject`` refuses, the host check refuses its wildcard too.)
        spread = self.ip is None and pool.shares_slots
        swaps: dict[int, int] = {}
        items: list[Item] = []
        drawn = 0
        while drawn < draws and len(items) < self.wanted:
            # Position ``drawn`` of a virtual shuffle swaps with a random later one.
            other = drawn + int(self.rng.random() * (total - drawn))
            if other >= total:  # random() * n rounds up to n once in 2**53 draws
                other = total - 1
            position = swaps.get(other, other)
            swaps[other] = swaps.get(drawn, drawn)
            drawn += 1
            key = members.at(position)
            if refused and (key[0], key[1]) in refused:
                continue
            if self.pairs:
                if not pool.is_pair(key[0], key[1]):
                    continue
                if spread and is_wildcard(key[0]) and pool.pair_outranked(key[0], key[1]):
                    continue
                item = [self._entry(key[0], key[1], protocol) for protocol in self.protocols]
            else:
                item = [self._entry(*key)]
                if spread and pool.outranked(item[0]):
                    continue
            if reject is not None and any(reject(entry) for entry in item):
                refused.add((key[0], key[1]))
                continue
            items.append(item)
        if len(items) < self.wanted and drawn == total:
            return None  # every candidate was drawn: the rest is not there
        self.wanted -= len(items)
        return items

    def _still_free(self, ip: str, port: int) -> bool:
        if self.pairs:
            return self.pool.is_pair(ip, port)
        entry = self.pool.get((ip, port, self.protocols[0]))
        return entry is not None and self.pool.is_available(entry)

    def _entry(self, ip: str, port: int, protocol: str) -> Entry:
        entry = self.pool.get((ip, port, protocol))
        assert entry is not None, "the pool's index names an entry it does not hold"
        return entry

    # -- a run of consecutive numbers ----------------------------------------------------------

    def _step_run(self, budget: int) -> list[Item] | None:
        if self._run is None:
            if self._room() < self.count:
                return None
            found = self._find_run()
            if found is None:
                return None
            self._run, self._next = found, found[1]
        ip, first = self._run
        end = min(first + self.count, self._next + max(1, budget // len(self.protocols)))
        items: list[Item] = []
        for port in range(self._next, end):
            item = self._run_item(ip, port)
            if item is None:
                # Refused by ``reject``, or (between steps) taken by somebody else: this run will
                # not do. Leaving the number out of later searches also guarantees progress.
                self._refused.add((ip, port))
                started = self._next > first
                self._run, self.wanted = None, self.count
                if started:
                    raise Restart()
                return []
            items.append(item)
        self._next = end
        self.wanted -= len(items)
        return items

    def _run_item(self, ip: str, port: int) -> Item | None:
        item = []
        for protocol in self.protocols:
            entry = self.pool.get((ip, port, protocol))
            if entry is None or not self.pool.is_available(entry):
                return None
            if self.reject is not None and self.reject(entry):
                return None
            item.append(entry)
        return item

    def _find_run(self) -> tuple[str, int] | None:
        """A start of ``count`` consecutive free numbers on one ip, uniform over every such start
        on every ip, or None."""
        count = self.count
        needle = b"\x01" * count
        runs: list[tuple[str, int, int]] = []  # ip, first start, how many starts
        total = 0
        for ip in [self.ip] if self.ip is not None else self._ips():
            free = self._free_map(ip)
            start = free.find(needle)
            while start >= 0:
                end = free.find(0, start + count)
                if end < 0:
                    end = PORTS
                starts = end - start - count + 1
                runs.append((ip, start, starts))
                total += starts
                start = free.find(needle, end)
        if not total:
            return None
        pick = min(int(self.rng.random() * total), total - 1)
        for ip, start, starts in runs:
            if pick < starts:
                return ip, start + pick
            pick -= starts
        raise AssertionError("unreachable: pick < total")  # pragma: no cover

    def _ips(self) -> list[str]:
        if self.pairs:
            return [ip for ip in self.pool.ips("tcp") if self.pool.pair_count(ip)]
        return self.pool.ips(self.protocols[0])

    def _free_map(self, ip: str) -> bytes | bytearray:
        """1 where the number is free for every protocol of the claim and not refused."""
        free: bytes | bytearray = self.pool.free_map(ip, self.protocols[0])
        if self.pairs:
            other = self.pool.free_map(ip, self.protocols[1])
            free = (int.from_bytes(free) & int.from_bytes(other)).to_bytes(PORTS)
        refused = [port for refused_ip, port in self._refused if refused_ip == ip]
        if refused:
            free = bytearray(free)
            for port in refused:
                free[port] = 0
        return free
