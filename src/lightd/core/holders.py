"""Who holds a pool entry, and the one rule for taking, freeing and removing it.

An entry is free or held by exactly one holder (CONTRACT.md, "Holders"): the operator (``PUT
.../use {"in_use": true}``, a claim without a ttl), a container (its ``internal_id``), or a lease
(a claim with a ttl; its id). Only the holder's own operations free an entry: a container's
entries are freed by deleting or rebinding that container, a lease's by releasing it or by its
expiry, the operator's by ``PUT .../use {"in_use": false}`` or by deleting the entry. One
hand-over is allowed besides: a container created (or rebound) on entries a lease holds takes them
from the lease, since that is what the lease was for.

Every change of an entry's holder, from every use case (use, delete, bulk delete, claim, container
create/rebind/delete, start-up repair), goes through the functions here; :meth:`Pool.set_in_use`
is the low-level write they share and nothing else calls it. A row has ``in_use``, ``container``
and ``lease``; in use with neither means held by the operator.

The start-up cross-check (:func:`cross_check`) follows Kubernetes' port allocator repair rule:
better to leak a port than to hand it out twice.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from lightd.core.containers import Container
from lightd.core.entry import Entry, Key
from lightd.core.pool import Pool
from lightd.errors import Conflict

__all__ = [
    "OPERATOR",
    "Holder",
    "Repair",
    "check_removable",
    "container_holder",
    "lease_holder",
    "cross_check",
    "hand_over",
    "held_by",
    "holder_of",
    "mark_in_use",
    "release",
    "take",
]


@dataclass(frozen=True)
class Holder:
    """``kind`` is ``operator``, ``container`` or ``lease``; ``name`` the container's internal_id
    or the lease's id."""

    kind: str
    name: str | None = None

    def describe(self) -> str:
        if self.kind == "operator":
            return "the operator (marked in use by hand)"
        return f"{self.kind} {self.name}"


OPERATOR = Holder("operator")


def container_holder(internal_id: str) -> Holder:
    return Holder("container", internal_id)


def lease_holder(lease_id: str) -> Holder:
    return Holder("lease", lease_id)


def holder_of(entry: Entry) -> Holder | None:
    """Who holds ``entry`` now; None when it is free."""
    if not entry.in_use:
        return None
    if entry.container is not None:
        return container_holder(entry.container)
    if entry.lease is not None:
        return lease_holder(entry.lease)
    return OPERATOR


def _store(pool: Pool, entry: Entry, holder: Holder | None) -> None:
    kind = None if holder is None else holder.kind
    name = None if holder is None else holder.name
    pool.set_in_use(entry, holder is not None, name if kind == "container" else None,
                    name if kind == "lease" else None)


def _refuse_blocked(pool: Pool, entry: Entry, verb: str) -> None:
    blockers = pool.blockers(entry)
    if blockers:
        names = ", ".join(b.label() for b in blockers)
        raise Conflict(
            f"{entry.label()} {verb}: it conflicts with {names}, which is in use",
            port=entry.label(),
            conflicts_with=[b.label() for b in blockers],
        )


def take(pool: Pool, entry: Entry, holder: Holder) -> bool:
    """Give ``entry`` to ``holder``; False when it already has it.

    Refused (Conflict) when another holder has it (but a container takes an entry from a lease),
    or when a conflicting entry of the same port is in use (the kernel would not bind both).
    """
    if pool.is_available(entry):  # free and unblocked: the claims' common case, one lookup
        _store(pool, entry, holder)
        return True
    current = holder_of(entry)
    if current == holder:
        return False
    if current is not None and current.kind == "lease" and holder.kind == "container":
        _store(pool, entry, holder)  # in use already, so nothing it conflicts with is
        return True
    if current is not None:
        raise Conflict(
            f"{entry.label()} is already in use by {current.describe()}",
            port=entry.label(),
            held_by=_holder_json(current),
        )
    _refuse_blocked(pool, entry, "cannot be taken")
    _store(pool, entry, holder)
    return True


def mark_in_use(pool: Pool, entry: Entry) -> bool:
    """``PUT .../use {"in_use": true}``: idempotent whoever holds it, so the holder is kept."""
    if entry.in_use:
        return False
    _refuse_blocked(pool, entry, "cannot be marked in use")
    _store(pool, entry, OPERATOR)
    return True


def hand_over(pool: Pool, entry: Entry, holder: Holder, to: Holder | None) -> bool:
    """Move ``entry`` from ``holder`` to ``to`` (None: free it): a lease kept by the operator,
    or a container's :func:`take` undone (the entry goes back to its holder before). False when
    ``holder`` does not hold it (nothing is changed then)."""
    if holder_of(entry) != holder:
        return False
    _store(pool, entry, to)
    return True


def release(pool: Pool, entry: Entry, holder: Holder) -> bool:
    """Free ``entry`` on behalf of ``holder``; False when it was free already.

    Refused (Conflict) when somebody else holds it: only the holder's own operations free it.
    """
    current = holder_of(entry)
    if current is None:
        return False
    if current != holder:
        raise _held_elsewhere(entry, current)
    _store(pool, entry, None)
    return True


def held_by(entries: Iterable[Entry], holder: Holder) -> list[Entry]:
    """The entries among ``entries`` that ``holder`` holds (what it may free)."""
    return [entry for entry in entries if holder_of(entry) == holder]


def check_removable(entry: Entry) -> None:
    """Deleting an entry takes it from its holder: allowed when free or held by the operator."""
    current = holder_of(entry)
    if current is not None and current != OPERATOR:
        raise _held_elsewhere(entry, current)


def _held_elsewhere(entry: Entry, current: Holder) -> Conflict:
    """The refusal of freeing or deleting an entry ``current`` holds, saying how to free it."""
    return Conflict(
        f"{entry.label()} is held by {current.describe()}; {_how_to_free(current)}",
        port=entry.label(),
        held_by=_holder_json(current),
        **({"container": current.name} if current.kind == "container" else {}),
    )


def _how_to_free(holder: Holder) -> str:
    if holder.kind == "container":
        return "delete or rebind that container to free it"
    if holder.kind == "lease":
        return (f"release it (DELETE /network/leases/{holder.name}) or let it expire to free "
                "it, or keep it (POST .../keep) to hold it by hand")
    return 'free it with PUT .../use {"in_use": false} first'


def _holder_json(holder: Holder) -> dict[str, str | None]:
    return {"kind": holder.kind, "name": holder.name}


# -- start-up cross-check ----------------------------------------------------------------------


@dataclass(frozen=True)
class Repair:
    """One disagreement found between the entries' holders and the containers' bindings.

    ``holder`` is what the entry was given (None: left as it was, reported only).
    """

    key: Key
    problem: str
    holder: Holder | None


def _label(key: Key) -> str:
    return Entry(*key).label()


def cross_check(
    pool: Pool, containers: Mapping[str, Container], leases: Collection[str] = ()
) -> list[Repair]:
    """Make the holder stored on each entry agree with the bindings stored on each container
    and with the leases stored (``leases``: their ids).

    Repairs are made in ``pool`` (memory) and returned, for the caller to save and report:

    - an entry held by a container that does not exist, or that does not bind it, is kept in use
      and handed to the operator, who can free it by hand (a leak, never a double allocation);
    - an entry a container binds (or is rebinding to) that is free or held by the operator is
      given to that container;
    - an entry held by a lease that is not stored is handed to the operator, as above;
    - an entry two containers bind, or a bound entry missing from the pool, cannot be repaired
      safely and is only reported.
    """
    repairs: list[Repair] = []
    wanted: dict[Key, list[str]] = {}
    for container in containers.values():
        keys = container.keys() | {b.key for b in container.pending or ()}
        for key in sorted(keys):
            wanted.setdefault(key, []).append(container.internal_id)
    for entry in pool.entries():
        current = holder_of(entry)
        if current is not None and current.kind == "lease" and current.name not in leases:
            _store(pool, entry, OPERATOR)
            repairs.append(Repair(
                entry.key,
                f"{entry.label()} was held by lease {current.name}, which is not known; kept in "
                'use, held by the operator (free it with PUT .../use {"in_use": false})',
                OPERATOR,
            ))
            continue
        if current is None or current.kind != "container":
            continue
        if current.name not in wanted.get(entry.key, ()):
            known = "does not bind it" if current.name in containers else "is not known"
            _store(pool, entry, OPERATOR)
            repairs.append(Repair(
                entry.key,
                f"{entry.label()} was held by container {current.name}, which {known}; kept in "
                'use, held by the operator (free it with PUT .../use {"in_use": false})',
                OPERATOR,
            ))
    for key, names in sorted(wanted.items()):
        bound = pool.get(key)
        if bound is None:
            for name in names:
                repairs.append(Repair(
                    key, f"container {name} binds {_label(key)}, which is not in the pool", None
                ))
            continue
        if len(names) > 1:
            repairs.append(Repair(
                key, f"{bound.label()} is bound by containers {', '.join(names)} at once; left "
                "with its holder", None,
            ))
            continue
        owner = container_holder(names[0])
        current = holder_of(bound)
        if current == owner:
            continue
        was = "free" if current is None else f"held by {current.describe()}"
        # The engine runs it on that port already: record the truth, and say when it clashes.
        blockers = pool.blockers(bound)
        clash = ""
        if blockers:
            clash = f"; it conflicts with {', '.join(b.label() for b in blockers)}, which is in use"
        _store(pool, bound, owner)
        repairs.append(Repair(
            key,
            f"{bound.label()} is bound by container {names[0]} but was {was}; given to it{clash}",
            owner,
        ))
    return repairs
