"""The pure half of the iptables firewall: rules, reading ``iptables-save``, planning batches.

Nothing here runs a process. :mod:`lightd.adapters.iptables` reads the current state with
``iptables-save -t filter``, asks this module for a :class:`Plan`, and feeds ``Plan.script`` to one
``iptables-restore --noflush``.

A lightd rule is rendered exactly as ``iptables-save`` prints it back, for example::

    -A LIGHTD -d 10.0.0.5/32 -p tcp -m tcp --dport 25565 -m comment --comment lightd -j ACCEPT

Lines of lightd's chain fall in three kinds: *ours* (tagged and of that exact shape), *tagged but
unrecognised* (someone wrote a rule with lightd's tag: lightd owns it and reconcile removes it),
and *foreign* (no tag: never touched, and kept verbatim and in order when the chain is rebuilt).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from lightd.core.entry import Entry
from lightd.errors import InvalidInput

__all__ = [
    "DEFAULT_CHAIN",
    "DEFAULT_TAG",
    "ChainState",
    "Line",
    "Plan",
    "Rule",
    "backend_of",
    "close_plan",
    "jump_spec",
    "open_plan",
    "parse_save",
    "reconcile_plan",
    "render_rule",
    "revert_plan",
    "rule_for",
    "rules_for",
    "summarize_drift",
    "validate_chain",
    "validate_tag",
]

DEFAULT_CHAIN = "LIGHTD"
DEFAULT_TAG = "lightd"
MAX_DRIFT_ITEMS = 50

# Deleting one rule by its spec makes iptables-nft compare it with every cached rule, so d deletes
# from a chain of n lines cost about d * n comparisons (65,535 of 65,535 took 23 s), while
# re-adding a kept line costs about as much as 2,000 such comparisons. Past that point the chain
# is flushed and its kept lines re-added verbatim, in order, in the same atomic batch.
REBUILD_FACTOR = 2000

_CHAIN_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,27}")
_PROTOCOLS = frozenset({"tcp", "udp"})
_TAG_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_RESERVED = frozenset(
    {
        "INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING",
        "ACCEPT", "DROP", "REJECT", "RETURN", "QUEUE", "NFQUEUE", "LOG", "MARK", "DOCKER",
        "DOCKER-USER",
    }
)  # fmt: skip


_new_rule = tuple.__new__  # Rule(...) without the Python-level __new__: 65,535 of them add up


class Rule(NamedTuple):
    """One ACCEPT rule: ``ip`` is None for a wildcard entry (no ``-d``)."""

    family: int
    protocol: str
    port: int
    ip: str | None

    def label(self) -> str:
        if self.ip is None:
            host = "0.0.0.0" if self.family == 4 else "[::]"
        else:
            host = f"[{self.ip}]" if self.family == 6 else self.ip
        return f"{host}:{self.port}/{self.protocol}"


def validate_chain(chain: str) -> str:
    if not isinstance(chain, str) or not _CHAIN_RE.fullmatch(chain) or chain in _RESERVED:
        raise InvalidInput(
            f"firewall chain must be 1 to 28 letters, digits, '_', '.' or '-' and not a built-in "
            f"chain or target name (got {chain!r})"
        )
    return chain


def validate_tag(tag: str) -> str:
    if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
        raise InvalidInput(
            f"firewall rule tag must be 1 to 64 letters, digits, '_', '.', ':' or '-' (got {tag!r})"
        )
    return tag


def _address(ip: object) -> tuple[int, str | None]:
    """(family, canonical ip or None for a wildcard) of a checked address."""
    try:
        if not isinstance(ip, str):
            raise TypeError
        address = ipaddress.ip_address(ip)
    except (TypeError, ValueError):
        raise InvalidInput(f"firewall: not a valid IP address: {ip!r}") from None
    return address.version, None if address.is_unspecified else str(address)


def _bad_port_or_protocol(port: object, protocol: object) -> InvalidInput | None:
    if type(port) is not int or not 1 <= port <= 65535:
        return InvalidInput(f"firewall: port must be an integer from 1 to 65535 (got {port!r})")
    if protocol != "tcp" and protocol != "udp":
        return InvalidInput(f"firewall: protocol must be tcp or udp (got {protocol!r})")
    return None


def rule_for(entry: Entry) -> Rule:
    """The rule of one pool entry; its fields are checked again before any argv sees them."""
    family, ip = _address(entry.ip)
    error = _bad_port_or_protocol(entry.port, entry.protocol)
    if error is not None:
        raise error
    return Rule(family, entry.protocol, entry.port, ip)


def rules_for(entries: Iterable[Entry]) -> list[Rule]:
    """Rules of the entries, each once, in first-seen order (the same checks as rule_for, with
    each distinct address parsed once: a pool has few addresses and up to 131,070 entries)."""
    addresses: dict[str, tuple[int, str | None]] = {}
    found: dict[Rule, None] = {}
    for entry in entries:
        ip, port, protocol = entry.ip, entry.port, entry.protocol
        known = addresses.get(ip) if type(ip) is str else None
        if known is None:
            known = addresses[ip] = _address(ip)
        if type(port) is not int or not 1 <= port <= 65535 or protocol not in _PROTOCOLS:
            raise _bad_port_or_protocol(port, protocol) or InvalidInput("firewall: bad entry")
        found[_new_rule(Rule, (known[0], protocol, port, known[1]))] = None
    return list(found)


def render_rule(rule: Rule, tag: str = DEFAULT_TAG) -> str:
    """The rule spec after ``-A CHAIN``, in the form ``iptables-save`` prints."""
    dest = "" if rule.ip is None else f"-d {rule.ip}/{32 if rule.family == 4 else 128} "
    return (
        f"{dest}-p {rule.protocol} -m {rule.protocol} --dport {rule.port} "
        f"-m comment --comment {tag} -j ACCEPT"
    )


def _render_many(head: str, rules: Sequence[Rule], tag: str) -> list[str]:
    """``head + render_rule(rule, tag)`` for each rule, with the parts before and after the port
    built once per (family, protocol, ip)."""
    parts: dict[tuple[int, str, str | None], tuple[str, str]] = {}
    lines = []
    for rule in rules:
        family, protocol, port, ip = rule
        key = (family, protocol, ip)
        known = parts.get(key)
        if known is None:
            before, _, after = render_rule(Rule(family, protocol, 0, ip), tag).partition(" --dport 0 ")
            known = parts[key] = (f"{head}{before} --dport ", f" {after}")
        lines.append(f"{known[0]}{port}{known[1]}")
    return lines


def jump_spec(chain: str) -> str:
    return f"-j {chain}"


class Line(NamedTuple):
    """One ``-A CHAIN ...`` line of lightd's chain: its spec verbatim and what it is."""

    spec: str
    rule: Rule | None  # set when the line is one of lightd's rules
    tagged: bool  # carries lightd's tag (always true when rule is set)


@dataclass
class ChainState:
    """What one family's filter table holds of lightd's chain and INPUT's jumps to it."""

    family: int
    chain: str
    chain_exists: bool = False
    jumps: int = 0
    lines: list[Line] = field(default_factory=list)
    backend: str = ""

    def owned(self) -> list[Rule]:
        return [line.rule for line in self.lines if line.rule is not None]

    def tagged_count(self) -> int:
        return sum(1 for line in self.lines if line.tagged)


def _rule_pattern(tag: str) -> re.Pattern[str]:
    quoted = re.escape(tag)
    return re.compile(
        r"(?:-d (?P<ip>[0-9A-Fa-f.:]+)/(?P<prefix>\d+) )?"
        r"-p (?P<proto>tcp|udp) -m (?P=proto) --dport (?P<port>\d+) "
        rf"-m comment --comment (?:{quoted}|\"{quoted}\") -j ACCEPT"
    )


def _tag_pattern(tag: str) -> re.Pattern[str]:
    quoted = re.escape(tag)
    return re.compile(rf"(?:^| )--comment (?:{quoted}|\"{quoted}\")(?: |$)")


def parse_line(spec: str, family: int, rule_re: re.Pattern[str], tag_re: re.Pattern[str]) -> Line:
    match = rule_re.fullmatch(spec)
    if match is not None:
        rule = _rule_of(match, family)
        if rule is not None:
            return Line(spec, rule, True)
    return Line(spec, None, tag_re.search(spec) is not None)


def _rule_of(match: re.Match[str], family: int) -> Rule | None:
    port = int(match["port"])
    if not 1 <= port <= 65535:
        return None
    raw_ip = match["ip"]
    if raw_ip is None:
        return Rule(family, match["proto"], port, None)
    try:
        address = ipaddress.ip_address(raw_ip)
    except ValueError:
        return None
    full = 32 if family == 4 else 128
    if address.version != family or int(match["prefix"]) != full or address.is_unspecified:
        return None
    return Rule(family, match["proto"], port, str(address))


def backend_of(save_output: str) -> str:
    """``iptables-nft`` or ``iptables-legacy``, from the header ``iptables-save`` writes."""
    for line in save_output.splitlines():
        if line.startswith("# Generated by"):
            return "iptables-nft" if "(nf_tables)" in line else "iptables-legacy"
    return ""


def parse_save(text: str, family: int, chain: str, tag: str = DEFAULT_TAG) -> ChainState:
    """Read lightd's chain and INPUT's jumps to it from ``iptables-save -t filter`` output."""
    state = ChainState(family, chain, backend=backend_of(text))
    rule_re, tag_re = _rule_pattern(tag), _tag_pattern(tag)
    in_filter = False
    declare = f":{chain} "
    ours = f"-A {chain} "
    jump = f"-A INPUT {jump_spec(chain)}"
    for raw in text.splitlines():
        if raw.startswith("*"):
            in_filter = raw == "*filter"
        elif not in_filter:
            continue
        elif raw.startswith(ours):
            state.lines.append(parse_line(raw[len(ours) :], family, rule_re, tag_re))
        elif raw == jump:
            state.jumps += 1
        elif raw.startswith(declare):
            state.chain_exists = True
        elif raw == "COMMIT":
            in_filter = False
    return state


@dataclass
class Plan:
    """One family's batch: the lines for ``iptables-restore --noflush`` and what it will change.

    The state after the batch is kept as the surviving lines plus the new rules, and only turned
    into a :class:`ChainState` on demand: at 65,535 rules, building it eagerly costs more than
    the rest of the planning together."""

    family: int
    chain: str
    body: list[str]
    kept: list[Line]
    new: list[Rule] = field(default_factory=list)
    jumps: int = 0
    exists: bool = True
    tag: str = DEFAULT_TAG
    added: int = 0
    removed: int = 0
    drift: list[str] = field(default_factory=list)

    @classmethod
    def nothing(cls, state: ChainState) -> Plan:
        return cls(state.family, state.chain, [], state.lines, [], state.jumps, state.chain_exists)

    @property
    def empty(self) -> bool:
        return not self.body

    @property
    def script(self) -> bytes:
        body = "\n".join(["*filter", *self.body, "COMMIT", ""])
        return body.encode("utf-8", "surrogateescape")

    @property
    def tagged_after(self) -> int:
        """How many lines of the chain carry lightd's tag once the batch is applied."""
        return sum(1 for line in self.kept if line.tagged) + len(self.new)

    @property
    def after(self) -> ChainState:
        lines = self.kept + [Line(render_rule(rule, self.tag), rule, True) for rule in self.new]
        return ChainState(self.family, self.chain, self.exists, self.jumps, lines)


def _build(
    state: ChainState,
    delete: set[int],
    add: Sequence[Rule],
    tag: str,
    *,
    jumps: int | None,
    insert_jump: bool = False,
) -> Plan:
    """The batch that deletes ``state.lines[i]`` for i in ``delete``, appends ``add``, and leaves
    INPUT with ``jumps`` jumps to the chain (None: leave them as they are)."""
    chain = state.chain
    body: list[str] = []
    if not state.chain_exists:
        # Only for an absent chain: with --noflush, declaring an existing user chain flushes it.
        body.append(f":{chain} - [0:0]")
    append = f"-A {chain} "
    if delete:
        kept = [line for i, line in enumerate(state.lines) if i not in delete]
        if len(delete) * len(state.lines) > REBUILD_FACTOR * len(kept):
            body.append(f"-F {chain}")
            body.extend([append + line.spec for line in kept])
        else:
            body.extend([f"-D {chain} {state.lines[i].spec}" for i in sorted(delete)])
    else:
        kept = state.lines
    body.extend(_render_many(append, add, tag))
    final_jumps = state.jumps if jumps is None else jumps
    if final_jumps > state.jumps:
        how = "-I INPUT 1" if insert_jump else "-A INPUT"
        body.extend([f"{how} {jump_spec(chain)}"] * (final_jumps - state.jumps))
    elif final_jumps < state.jumps:
        body.extend([f"-D INPUT {jump_spec(chain)}"] * (state.jumps - final_jumps))
    removed = sum(1 for i in delete if state.lines[i].tagged)
    return Plan(state.family, chain, body, kept, list(add), final_jumps, True, tag,
                added=len(add), removed=removed)  # fmt: skip


def open_plan(
    state: ChainState, rules: Sequence[Rule], tag: str = DEFAULT_TAG, *, insert_jump: bool = False
) -> Plan:
    """Add the rules not already present; make sure the chain exists and INPUT jumps to it."""
    present = {line.rule for line in state.lines if line.rule is not None}
    unique = list(dict.fromkeys(rules))
    add = [rule for rule in unique if rule not in present] if present else unique
    if not add and state.chain_exists and state.jumps >= 1:
        return Plan.nothing(state)
    return _build(state, set(), add, tag, jumps=max(state.jumps, 1), insert_jump=insert_jump)


def close_plan(state: ChainState, rules: Sequence[Rule], tag: str = DEFAULT_TAG) -> Plan:
    """Delete every copy of the rules; rules already absent are no error."""
    targets = set(rules)
    delete = {i for i, line in enumerate(state.lines) if line.rule in targets}
    if not delete:
        return Plan.nothing(state)
    return _build(state, delete, [], tag, jumps=None)


def reconcile_plan(
    state: ChainState, rules: Sequence[Rule], tag: str = DEFAULT_TAG, *, insert_jump: bool = False
) -> Plan:
    """Make the chain's tagged rules exactly ``rules``, each once, and INPUT jump to it once.

    Untagged lines of the chain and every other chain are left alone."""
    desired = dict.fromkeys(rules)
    if not desired and not state.chain_exists:
        return Plan.nothing(state)
    drift: list[str] = []
    if not state.chain_exists:
        drift.append(f"chain {state.chain} was missing")
    if state.jumps != 1:
        drift.append(
            f"INPUT jumped to {state.chain} {state.jumps} times instead of once"
            if state.jumps
            else f"INPUT did not jump to {state.chain}"
        )
    seen: set[Rule] = set()
    delete: set[int] = set()
    for i, line in enumerate(state.lines):
        if line.rule is not None:
            if line.rule not in desired:
                delete.add(i)
                drift.append(f"stale rule for {line.rule.label()} (no such pool entry)")
            elif line.rule in seen:
                delete.add(i)
                drift.append(f"duplicate rule for {line.rule.label()}")
            seen.add(line.rule)
        elif line.tagged:
            delete.add(i)
            drift.append(f"unrecognised rule with lightd's tag: {line.spec}")
    add = [rule for rule in desired if rule not in seen]
    drift.extend(f"missing rule for {rule.label()}" for rule in add)
    if not delete and not add and state.chain_exists and state.jumps == 1:
        return Plan.nothing(state)
    plan = _build(state, delete, add, tag, jumps=1, insert_jump=insert_jump)
    plan.drift = drift
    return plan


def revert_plan(current: ChainState, before: ChainState, tag: str = DEFAULT_TAG) -> Plan:
    """The batch that puts the chain back exactly as ``before`` (lines, order and jumps)."""
    chain = current.chain
    back = Plan.nothing(before)
    if not before.chain_exists:
        if current.chain_exists:
            back.body = [f"-D INPUT {jump_spec(chain)}"] * current.jumps
            back.body += [f"-F {chain}", f"-X {chain}"]
        return back
    if not current.chain_exists:
        back.body.append(f":{chain} - [0:0]")
    if [line.spec for line in current.lines] != [line.spec for line in before.lines]:
        back.body.append(f"-F {chain}")
        back.body.extend(f"-A {chain} {line.spec}" for line in before.lines)
    if before.jumps > current.jumps:
        back.body += [f"-A INPUT {jump_spec(chain)}"] * (before.jumps - current.jumps)
    else:
        back.body += [f"-D INPUT {jump_spec(chain)}"] * (current.jumps - before.jumps)
    return back


def summarize_drift(drift: Sequence[str], limit: int = MAX_DRIFT_ITEMS) -> list[str]:
    if len(drift) <= limit:
        return list(drift)
    return [*drift[:limit], f"... and {len(drift) - limit} more"]
