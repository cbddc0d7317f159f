"""The repair loop's rules, without I/O: what a finding is, how idle passes are counted, how a
finding keeps the time it was first seen, and what the firewall's drift words name.

:mod:`lightd.service.repair` gathers what the pool, the host and the engine say and hands it to
these; keeping them pure lets the unit tests try many sequences of passes quickly.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lightd.core.entry import Entry, Key, parse_ip
from lightd.errors import InvalidInput

__all__ = [
    "FINDING_TYPES",
    "Finding",
    "IdleTracker",
    "Merged",
    "drift_finding",
    "merge",
    "stamp",
]

# In the order findings are listed (and the metrics' label values).
FINDING_TYPES = ("squatter", "orphan", "idle", "firewall_drift")
_ORDER = {kind: index for index, kind in enumerate(FINDING_TYPES)}
# The words of lightd.adapters.iptables_rules.reconcile_plan that name one rule's entry.
_RULE_FOR = re.compile(r"\brule for (\S+)")


def stamp(when: float) -> str:
    """A time as the status shows it (UTC, as the firewall's ``last_reconcile.at``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


@dataclass(frozen=True)
class Finding:
    """One disagreement between the pool and the host.

    ``ident`` says which findings of two passes are the same one (its ``since`` is kept and it is
    logged once); ``key`` is the entry it is about, if any; ``extra`` is shown beside the rest.
    """

    type: str
    ident: str
    key: Key | None
    message: str
    since: float
    extra: Mapping[str, Any] = field(default_factory=dict)

    def sort_key(self) -> tuple[int, bool, tuple[int, int, int, str] | tuple[()], str]:
        # By type, then by entry (those about no entry last), as the pool lists entries.
        entry = () if self.key is None else Entry(*self.key).sort_key()
        return (_ORDER.get(self.type, len(_ORDER)), self.key is None, entry, self.ident)

    def to_json(self) -> dict[str, Any]:
        entry = None
        if self.key is not None:
            ip, port, protocol = self.key
            entry = {"ip": ip, "port": port, "protocol": protocol}
        return {
            "type": self.type,
            "entry": entry,
            "message": self.message,
            "since": stamp(self.since),
            **self.extra,
        }


def ident_of(kind: str, key: Key) -> str:
    return f"{kind} {Entry(*key).label()}"


@dataclass
class Merged:
    """The findings of a pass with their first-seen times, and which ones are new or gone."""

    findings: list[Finding]
    new: list[Finding]
    gone: list[Finding]


def merge(previous: Mapping[str, Finding], found: Iterable[Finding], carried: Iterable[str] = ()) -> Merged:
    """This pass's findings, each keeping the ``since`` of the same finding last pass.

    Findings of the types in ``carried`` are kept from ``previous`` as they were: this pass could
    not check them (the host or the engine did not answer), which says nothing about them.
    """
    kept_types = set(carried)
    current: dict[str, Finding] = {}
    for finding in found:
        if finding.type in kept_types:
            continue
        before = previous.get(finding.ident)
        if before is not None and before.since < finding.since:
            finding = Finding(
                finding.type, finding.ident, finding.key, finding.message, before.since, finding.extra
            )
        current[finding.ident] = finding
    for ident, finding in previous.items():
        if finding.type in kept_types:
            current[ident] = finding
    new = [f for ident, f in current.items() if ident not in previous]
    gone = [f for ident, f in previous.items() if ident not in current]
    ordered = sorted(current.values(), key=Finding.sort_key)
    return Merged(ordered, sorted(new, key=Finding.sort_key), sorted(gone, key=Finding.sort_key))


class IdleTracker:
    """Counts, per entry held by the operator, the passes in a row that found nothing bound on it.

    An entry is idle once that count reaches ``passes``. A pass that finds it bound starts the
    count again; a pass that does not list it (no longer held by the operator, or not checked as
    it changed during the pass) forgets it. A pass that could not read the host is not counted.
    """

    def __init__(self, passes: int) -> None:
        if passes < 1:
            raise ValueError(f"idle passes must be at least 1 (got {passes})")
        self.passes = passes
        # Passes in a row with nothing bound, and the time of the first of them.
        self._streaks: dict[Key, tuple[int, float]] = {}

    def observe(self, bound: Mapping[Key, bool], now: float) -> dict[Key, tuple[int, float]]:
        """Count one pass: ``bound`` maps each operator-held entry checked to whether something
        has it bound. Returns the idle entries, each with its count and since when."""
        streaks: dict[Key, tuple[int, float]] = {}
        for key, is_bound in bound.items():
            if is_bound:
                continue
            count, since = self._streaks.get(key, (0, now))
            streaks[key] = (count + 1, since)
        self._streaks = streaks
        return {key: value for key, value in streaks.items() if value[0] >= self.passes}

    def streak(self, key: Key) -> int:
        return self._streaks.get(key, (0, 0.0))[0]


def _key_of_label(label: str) -> Key | None:
    """``0.0.0.0:25565/tcp`` or ``[::]:19132/udp`` (as Entry.label and Rule.label write them)."""
    address, _, protocol = label.rpartition("/")
    if protocol not in ("tcp", "udp"):
        return None
    if address.startswith("["):
        host, _, port = address[1:].partition("]:")
    else:
        host, _, port = address.rpartition(":")
    if not port.isdigit() or not port.isascii():
        return None
    try:
        ip = parse_ip(host)
    except InvalidInput:
        return None
    number = int(port)
    return (ip, number, protocol) if 1 <= number <= 65535 else None


def drift_finding(text: str, now: float, added: int, removed: int) -> Finding:
    """A drift the firewall's reconcile found and repaired (one of its report's ``drift`` lines)."""
    match = _RULE_FOR.search(text)
    key = _key_of_label(match.group(1)) if match else None
    return Finding(
        "firewall_drift",
        f"firewall_drift {text}",
        key,
        f"Firewall drift: {text}; repaired at once (this pass added {added} and removed {removed} "
        "rules, so lightd's chain holds exactly the pool's rules again)",
        now,
        {"drift": text, "repaired": True},
    )
