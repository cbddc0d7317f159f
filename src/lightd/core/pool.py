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
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from lightd.core.entry import Entry, Key, wildcard_of
from lightd.core.randomset import RandomSet
from lightd.errors import AlreadyExists, Ambiguous, PortNotFound

__all__ = ["Pool", "Reject"]

Slot = tuple[int, int, str]
Group = tuple[str, str]
Reject = Callable[[Entry], bool]


class Pool:
    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._entries: dict[Key, Entry] = {}
        self._slots: dict[Slot, list[Entry]] = {}
        self._available: dict[Group, RandomSet[Key]] = {}
        # The same keys again, for draws filtered by protocol only, and for unfiltered ones.
        self._by_protocol: dict[str, RandomSet[Key]] = {"tcp": RandomSet(), "udp": RandomSet()}
        self._all_available: RandomSet[Key] = RandomSet()
        # Per group: the distinct sets its available keys are in (its own and the unions).
        self._targets: dict[Group, tuple[RandomSet[Key], ...]] = {}
        self._sorted: list[Entry] | None = None
        self._load(entries)

    def _load(self, entries: Iterable[Entry]) -> None:
        """Build every index in one pass (start-up with 131,070 entries must be quick)."""
        for entry in entries:
            if entry.key in self._entries:
                raise AlreadyExists()
            self._entries[entry.key] = entry
            self._slots.setdefault(entry.slot, []).append(entry)
            self._available.setdefault((entry.ip, entry.protocol), RandomSet())
        self._index_groups()
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

    def entries(self) -> list[Entry]:
        """Every entry, sorted by ip (numerically, IPv4 first), port, protocol."""
        if self._sorted is None:
            self._sorted = sorted(self._entries.values(), key=Entry.sort_key)
        return self._sorted

    def is_available(self, entry: Entry) -> bool:
        return entry.key in self._available.get((entry.ip, entry.protocol), ())

    def available_count(self) -> int:
        return len(self._all_available)

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

        Without ``reject`` this is O(groups). With it, a bounded number of random draws, then
        a scan, so the answer stays exact when most entries are refused.
        """
        if ip is None:
            candidates = self._all_available if protocol is None else self._by_protocol[protocol]
            if not candidates:
                return None
            entry = self._entries[candidates.choice(rng)]
            if reject is None or not reject(entry):
                return entry  # the common case: one draw, accepted
            groups = [candidates]
        else:
            groups = self._groups(ip, protocol)
        total = sum(len(members) for members in groups)
        if total == 0:
            return None
        tries = 1 if reject is None else min(total, 32)
        for _ in range(tries):
            position = int(rng.random() * total)
            for members in groups:
                if position < len(members):
                    entry = self._entries[members.at(position)]
                    if reject is None or not reject(entry):
                        return entry
                    break
                position -= len(members)
        if reject is None:  # pragma: no cover - the single draw above always lands
            return None
        for members in groups:
            for key in members:
                entry = self._entries[key]
                if not reject(entry):
                    return entry
        return None

    def available_in(self, ip: str, protocol: str) -> list[Entry]:
        return [self._entries[key] for key in self._available.get((ip, protocol), ())]

    def ips(self) -> list[str]:
        """Every ip that has at least one available entry."""
        return sorted({ip for (ip, _), members in self._available.items() if members})

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
        self._slots.setdefault(entry.slot, []).append(entry)
        if (entry.ip, entry.protocol) not in self._available:
            self._available[(entry.ip, entry.protocol)] = RandomSet()
            self._index_groups()
        self._sorted = None
        self._refresh(entry.slot)

    def remove(self, key: Key) -> Entry:
        entry = self._entries.pop(key, None)
        if entry is None:
            raise PortNotFound()
        members = self._slots[entry.slot]
        members.remove(entry)
        # Groups are never dropped: there are only as many as ips times protocols.
        for available in self._targets[(entry.ip, entry.protocol)]:
            available.discard(key)
        if members:
            self._refresh(entry.slot)
        else:
            del self._slots[entry.slot]
        self._sorted = None
        return entry

    def set_in_use(self, entry: Entry, in_use: bool, container: str | None = None) -> bool:
        """Mark ``entry`` (which must belong to the pool); return whether anything changed.

        The low-level write of an entry's holder: only :mod:`lightd.core.holders` calls it, so
        the rule of who may take or free an entry is written once.
        """
        holder = container if in_use else None
        if entry.in_use == in_use and entry.container == holder:
            return False
        entry.in_use = in_use
        entry.container = holder
        self._refresh(entry.slot)
        return True

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
        if available:
            for target in self._targets[(entry.ip, entry.protocol)]:
                target.add(key)
        else:
            for target in self._targets[(entry.ip, entry.protocol)]:
                target.discard(key)

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
