"""The pool: every entry, and an index of the available ones.

Rules (CONTRACT.md, "Availability"): an entry is available when it is not in use and no
conflicting entry is in use. Two entries of one port and protocol conflict when one of them is the
wildcard of its family (0.0.0.0 for IPv4, :: for IPv6): the kernel will not bind both at once.

Entries that compete for one kernel binding share a *slot* ``(family, port, protocol)``. A slot has
one entry in the common case and a handful at most, so re-deciding the availability of a slot's
entries after a change is cheap. Available entries sit in one RandomSet per ``(ip, protocol)``
group, and again in one per protocol and one for all, so an unfiltered ``random`` is one O(1)
draw. Those unions are separate sets only when they differ from a group: on a host with one ip
per protocol (the common case) they *are* the group's set, so marking a port costs one update
of it instead of three.

For claims of many entries the pool also keeps a *free-port map* per ip (a byte per port number
and protocol, tcp and udp side by side: 128 kB), and with it how many of the ip's numbers are
available on tcp and on udp at once (*pairs*), in step with every change. Every ip with both
protocols has one from the start (made with the other indexes, so no claim pays for making it);
any other ip gets one the first time a contiguous claim asks for a run on it. So entries of a
protocol and pairs are counted in O(1), a claim that cannot be met is told so before anything is
drawn, and runs of consecutive free numbers are found at C speed (lightd.core.choose). Arrays
rather than another hashed index, because every claim of one port pays for what a change updates:
an entry's byte and its twin's share a cache line.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from lightd.core.entry import Entry, Key, family_of, wildcard_of
from lightd.core.randomset import RandomSet
from lightd.errors import AlreadyExists, Ambiguous, PortNotFound

__all__ = ["Pool", "Reject"]

Slot = tuple[int, int, str]
Group = tuple[str, str]
Reject = Callable[[Entry], bool]
PORTS = 65536  # a free-port map of one protocol: index = port number (0 is never free)
UDP = {"tcp": 0, "udp": 1}  # where a protocol's byte sits in an ip's map, at 2 * port + UDP[...]


class Pool:
    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._entries: dict[Key, Entry] = {}
        self._slots: dict[Slot, list[Entry]] = {}
        self._shared = 0  # slots with more than one entry (entries that compete for a binding)
        self._available: dict[Group, RandomSet[Key]] = {}
        # The same keys again, for draws filtered by protocol only, and for unfiltered ones.
        self._by_protocol: dict[str, RandomSet[Key]] = {"tcp": RandomSet(), "udp": RandomSet()}
        self._all_available: RandomSet[Key] = RandomSet()
        # Per group: the distinct sets its available keys are in (its own and the unions).
        self._targets: dict[Group, tuple[RandomSet[Key], ...]] = {}
        # Per ip with a free-port map: the map, and the ip's pair count (in a list, to update it
        # in place: one lookup per change, since this runs on every claim).
        self._maps: dict[str, tuple[bytearray, list[int]]] = {}
        self._pair_counts: list[list[int]] = []  # those of the ips with both protocols
        self._sorted: list[Entry] | None = None
        # Per lease: the entries it holds (a lease's release, expiry or keep touches only those).
        self._leased: dict[str, dict[Key, Entry]] = {}
        self._load(entries)

    def _load(self, entries: Iterable[Entry]) -> None:
        """Build every index in one pass (start-up with 131,070 entries must be quick)."""
        for entry in entries:
            if entry.key in self._entries:
                raise AlreadyExists()
            self._entries[entry.key] = entry
            self._slots.setdefault(entry.slot, []).append(entry)
            self._available.setdefault((entry.ip, entry.protocol), RandomSet())
            if entry.lease is not None:
                self._leased.setdefault(entry.lease, {})[entry.key] = entry
        self._index_groups()
        self._shared = sum(len(members) > 1 for members in self._slots.values())
        for slot, members in self._slots.items():
            if len(members) == 1:
                if not members[0].in_use:
                    self._mark(members[0], True)
            else:
                self._refresh(slot)

    # -- reading -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: Key) -> Entry | None:
        return self._entries.get(key)

    def resolve(self, ip: str, port: int, protocol: str | None) -> Entry:
        """The entry a path ``/{ip}/{port}[?protocol=]`` names; never a guess between tcp and udp."""
        if protocol is not None:
            entry = self._entries.get((ip, port, protocol))
            if entry is None:
                raise PortNotFound()
            return entry
        tcp = self._entries.get((ip, port, "tcp"))
        udp = self._entries.get((ip, port, "udp"))
        if tcp is not None and udp is not None:
            raise Ambiguous(
                f"{ip}:{port} exists for both tcp and udp; add ?protocol=tcp or ?protocol=udp",
                choices=["tcp", "udp"],
            )
        entry = tcp or udp
        if entry is None:
            raise PortNotFound()
        return entry

    def unsorted(self) -> Iterable[Entry]:
        """Every entry, in no order: for counting, without the sort of :meth:`entries`."""
        return self._entries.values()

    def entries(self) -> list[Entry]:
        """Every entry, sorted by ip (numerically, IPv4 first), port, protocol."""
        if self._sorted is None:
            self._sorted = sorted(self._entries.values(), key=Entry.sort_key)
        return self._sorted

    def leased(self, lease: str) -> list[Entry]:
        """The entries ``lease`` holds, sorted like :meth:`entries`."""
        return sorted(self._leased.get(lease, {}).values(), key=Entry.sort_key)

    def leases(self) -> list[str]:
        """The ids of the leases that hold at least one entry."""
        return list(self._leased)

    def is_available(self, entry: Entry) -> bool:
        return entry.key in self._available.get((entry.ip, entry.protocol), ())

    def available_count(self, protocol: str | None = None, ip: str | None = None) -> int:
        """How many entries are available (of ``protocol``, on ``ip``): O(1), O(groups) by ip."""
        if ip is None:
            return len(self._all_available if protocol is None else self._by_protocol[protocol])
        return sum(len(members) for members in self._groups(ip, protocol))

    def candidates(self, protocol: str, ip: str | None = None) -> RandomSet[Key]:
        """The keys of the available entries of ``protocol`` (on ``ip``). Read it, never change
        it: it is the pool's own index, and the next change of the pool changes it."""
        if ip is None:
            return self._by_protocol[protocol]
        return self._available.get((ip, protocol)) or RandomSet()

    def is_pair(self, ip: str, port: int) -> bool:
        """Whether ``ip:port`` is available on tcp and on udp."""
        free = (self._maps.get(ip) or self._map(ip))[0]
        return free[2 * port] == free[2 * port + 1] == 1

    def pair_count(self, ip: str | None = None) -> int:
        """How many ip:port are available on tcp and on udp at once (on ``ip``; O(ips) without)."""
        if ip is None:
            return sum(pairs[0] for pairs in self._pair_counts)
        return (self._maps.get(ip) or self._map(ip))[1][0]

    def free_map(self, ip: str, protocol: str) -> bytes:
        """One byte per port number, 1 where ``(ip, port, protocol)`` is available.

        Made on the first call for an ip, then kept in step by every change, so later calls
        cost a 64 kB copy. The copy is the caller's.
        """
        maps = self._maps.get(ip) or self._map(ip)
        return bytes(maps[0][UDP[protocol] :: 2])

    def _map(self, ip: str) -> tuple[bytearray, list[int]]:
        """The ip's map and pair count, made from the index now if it has none (O(entries):
        ~10 ms for 65,535, once)."""
        if ip in self._maps:
            return self._maps[ip]
        free = bytearray(2 * PORTS)
        groups = [(offset, self._available.get((ip, p))) for p, offset in UDP.items()]
        for offset, group in groups:
            for key in group or ():
                free[2 * key[1] + offset] = 1
        pairs = [(int.from_bytes(free[0::2]) & int.from_bytes(free[1::2])).bit_count()]
        if any(group is not None for _, group in groups):
            # Kept only for an ip of the pool: an unknown one (a claim's filter) gets an empty
            # answer. Its groups are never dropped, so the map stays wanted.
            self._maps[ip] = (free, pairs)
        return free, pairs

    @property
    def shares_slots(self) -> bool:
        """Whether entries of different ips compete for one kernel binding anywhere (a wildcard
        and a specific ip of one port and protocol), so that a choice over every ip must mind
        :meth:`outranked`."""
        return self._shared > 0

    def outranked(self, entry: Entry) -> bool:
        """Whether ``entry`` is a wildcard while an entry of a specific ip of its slot is
        available. A claim must not take both (the kernel binds one or the other), and the
        specific one gives the same number without blocking the rest of the slot."""
        if not entry.wildcard:
            return False
        members = self._slots.get(entry.slot, ())
        return len(members) > 1 and any(m is not entry and self.is_available(m) for m in members)

    def pair_outranked(self, ip: str, port: int) -> bool:
        """:meth:`outranked` for the tcp+udp pair of wildcard ``ip`` on ``port``: whether a
        specific ip of its family has that pair available."""
        members = self._slots.get((family_of(ip), port, "tcp"), ())
        return len(members) > 1 and any(
            not m.wildcard and self.is_pair(m.ip, port) for m in members
        )

    def blockers(self, entry: Entry) -> list[Entry]:
        """In-use entries of other ips that keep ``entry`` from being bound."""
        return [
            other
            for other in self._slots.get(entry.slot, ())
            if other is not entry and other.in_use and (other.wildcard or entry.wildcard)
        ]

    def random(
        self,
        rng: random.Random,
        ip: str | None = None,
        protocol: str | None = None,
        reject: Reject | None = None,
    ) -> Entry | None:
        """A uniformly chosen available entry that ``reject`` does not refuse, or None.

        One draw in the common case. When ``reject`` refuses it, the draws go on without
        replacement (the virtual shuffle of lightd.core.choose), so each entry is asked about
        at most once and None means that ``reject`` refused every one.
        """
        if ip is None:
            candidates = self._all_available if protocol is None else self._by_protocol[protocol]
            if not candidates:
                return None
            key = candidates.choice(rng)
            entry = self._entries[key]
            if reject is None or not reject(entry):
                return entry  # the common case: one draw, accepted
            groups, total, first = [candidates], len(candidates), candidates.position(key)
        else:
            groups = self._groups(ip, protocol)
            total = sum(len(members) for members in groups)
            if total == 0:
                return None
            first = min(int(rng.random() * total), total - 1)
            entry = self._entries[_at(groups, first)]
            if reject is None or not reject(entry):
                return entry
        # The first draw was position 0 of a shuffle: go on with positions 1, 2, ...
        swaps = {first: 0}
        for drawn in range(1, total):
            other = min(drawn + int(rng.random() * (total - drawn)), total - 1)
            position = swaps.get(other, other)
            swaps[other] = swaps.get(drawn, drawn)
            entry = self._entries[_at(groups, position)]
            if not reject(entry):
                return entry
        return None

    def ips(self, protocol: str | None = None) -> list[str]:
        """Every ip that has at least one available entry (of ``protocol``)."""
        return sorted({
            ip for (ip, group_protocol), members in self._available.items()
            if members and (protocol is None or group_protocol == protocol)
        })

    def _groups(self, ip: str | None, protocol: str | None) -> list[RandomSet[Key]]:
        return [
            members
            for (group_ip, group_protocol), members in self._available.items()
            if members
            and (ip is None or group_ip == ip)
            and (protocol is None or group_protocol == protocol)
        ]

    # -- changing ----------------------------------------------------------------------------

    def add(self, entry: Entry) -> None:
        key = entry.key
        if key in self._entries:
            raise AlreadyExists()
        self._entries[key] = entry
        members = self._slots.setdefault(entry.slot, [])
        members.append(entry)
        self._shared += len(members) == 2
        if (entry.ip, entry.protocol) not in self._available:
            self._available[(entry.ip, entry.protocol)] = RandomSet()
            self._index_groups()
        self._sorted = None
        self._refresh(entry.slot)

    def remove(self, key: Key) -> Entry:
        entry = self._entries.pop(key, None)
        if entry is None:
            raise PortNotFound()
        self._unlease(entry)
        members = self._slots[entry.slot]
        members.remove(entry)
        self._shared -= len(members) == 1
        # Groups are never dropped: there are only as many as ips times protocols.
        self._mark(entry, False)
        if members:
            self._refresh(entry.slot)
        else:
            del self._slots[entry.slot]
        self._sorted = None
        return entry

    def set_in_use(
        self, entry: Entry, in_use: bool, container: str | None = None, lease: str | None = None
    ) -> bool:
        """Mark ``entry`` (which must belong to the pool); return whether anything changed.

        The low-level write of an entry's holder: only :mod:`lightd.core.holders` calls it, so
        the rule of who may take or free an entry is written once.
        """
        if not in_use:
            container = lease = None
        if entry.in_use == in_use and entry.container == container and entry.lease == lease:
            return False
        was_in_use = entry.in_use
        self._unlease(entry)
        entry.in_use = in_use
        entry.container = container
        entry.lease = lease
        if lease is not None:
            self._leased.setdefault(lease, {})[entry.key] = entry
        if was_in_use != in_use:
            self._refresh(entry.slot)
        return True

    def _unlease(self, entry: Entry) -> None:
        if entry.lease is not None:
            held = self._leased.get(entry.lease)
            if held is not None:
                held.pop(entry.key, None)
                if not held:
                    del self._leased[entry.lease]

    def set_note(self, entry: Entry, note: str | None) -> None:
        entry.note = note

    def _refresh(self, slot: Slot) -> None:
        members = self._slots[slot]
        if len(members) == 1:
            only = members[0]
            self._mark(only, not only.in_use)
            return
        wildcard = self._entries.get((wildcard_of(slot[0]), slot[1], slot[2]))
        wildcard_used = wildcard is not None and wildcard.in_use
        specific_used = any(m.in_use for m in members if not m.wildcard)
        for member in members:
            blocked = specific_used if member.wildcard else wildcard_used
            self._mark(member, not member.in_use and not blocked)

    def _mark(self, entry: Entry, available: bool) -> None:
        key = entry.key
        group = (entry.ip, entry.protocol)
        targets = self._targets[group]
        if available:
            for target in targets:
                target.add(key)
        else:
            for target in targets:
                target.discard(key)
        if self._maps:
            maps = self._maps.get(entry.ip)
            if maps is not None:
                free = maps[0]
                at = 2 * entry.port + (entry.protocol == "udp")
                # A slot's refresh re-decides members that did not change: count changes only.
                # The number is a pair while both of its entries are available: this change
                # makes or breaks one exactly when the twin (same ip:port, other protocol) is.
                if free[at] != available:
                    free[at] = available
                    if free[at ^ 1]:
                        maps[1][0] += 1 if available else -1

    def _index_groups(self) -> None:
        """(Re)build the per-protocol and overall unions of the groups; when a new group appears."""

        def union(groups: list[RandomSet[Key]]) -> RandomSet[Key]:
            if len(groups) == 1:
                return groups[0]  # the same set, not a copy: nothing to keep in step
            merged: RandomSet[Key] = RandomSet()
            for group in groups:
                for key in group:
                    merged.add(key)
            return merged

        per_protocol = {
            protocol: [g for (_, p), g in self._available.items() if p == protocol]
            for protocol in ("tcp", "udp")
        }
        self._by_protocol = {protocol: union(groups) for protocol, groups in per_protocol.items()}
        used = [protocol for protocol, groups in per_protocol.items() if groups]
        if len(used) == 1:
            self._all_available = self._by_protocol[used[0]]
        else:
            self._all_available = union(list(self._available.values()))
        self._targets = {}
        for (ip, protocol), group in self._available.items():
            targets: list[RandomSet[Key]] = []
            for target in (group, self._by_protocol[protocol], self._all_available):
                if all(target is not seen for seen in targets):
                    targets.append(target)
            self._targets[(ip, protocol)] = tuple(targets)
        # An ip with both protocols gets its map now (at start-up, or when a group is added), so
        # that no claim of pairs stalls the loop making one; only such ips have pairs to count.
        self._pair_counts = [
            self._map(ip)[1]
            for ip, protocol in self._available
            if protocol == "udp" and (ip, "tcp") in self._available
        ]


def _at(groups: list[RandomSet[Key]], position: int) -> Key:
    """The key at ``position`` of the groups laid end to end."""
    for members in groups:
        if position < len(members):
            return members.at(position)
        position -= len(members)
    raise IndexError(position)
