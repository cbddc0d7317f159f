"""Choosing entries to claim: several at random, tcp+udp pairs, and runs of consecutive ports.

Pure functions over a :class:`Pool`; they change nothing. ``reject`` lets the caller refuse
entries the pool thinks are free (for example a port some other process has bound on the host).
"""

from __future__ import annotations

import random

from lightd.core.entry import Entry
from lightd.core.pool import Pool, Reject

__all__ = ["choose"]

PAIR_DRAWS = 64


def choose(
    pool: Pool,
    rng: random.Random,
    count: int,
    protocols: tuple[str, ...],
    ip: str | None = None,
    contiguous: bool = False,
    reject: Reject | None = None,
) -> list[list[Entry]] | None:
    """``count`` port numbers, each as one entry per protocol, or None when there are not enough.

    With one protocol every item is a single entry; with ("tcp", "udp") each item is the tcp and
    the udp entry of one ip:port. With ``contiguous`` the numbers are consecutive on one ip.
    """
    if contiguous:
        return _run(pool, rng, count, protocols, ip, reject)
    if count == 1 and len(protocols) == 1:  # the common claim, kept cheap
        entry = pool.random(rng, ip=ip, protocol=protocols[0], reject=reject)
        return None if entry is None else [[entry]]
    chosen: list[list[Entry]] = []
    taken: set[tuple[str, int]] = set()

    def refused(entry: Entry) -> bool:
        return (entry.ip, entry.port) in taken or (reject is not None and reject(entry))

    for _ in range(count):
        if len(protocols) == 1:
            entry = pool.random(rng, ip=ip, protocol=protocols[0], reject=refused)
            item = None if entry is None else [entry]
        else:
            item = _pair(pool, rng, protocols, ip, refused)
        if item is None:
            return None
        taken.add((item[0].ip, item[0].port))
        chosen.append(item)
    return chosen


def _twins(pool: Pool, entry: Entry, protocols: tuple[str, ...], reject: Reject) -> list[Entry] | None:
    twins = [entry]
    for protocol in protocols[1:]:
        twin = pool.get((entry.ip, entry.port, protocol))
        if twin is None or not pool.is_available(twin) or reject(twin):
            return None
        twins.append(twin)
    return twins


def _pair(
    pool: Pool, rng: random.Random, protocols: tuple[str, ...], ip: str | None, reject: Reject
) -> list[Entry] | None:
    first = protocols[0]
    # Random draws find a pair fast when pairs are common; the scan keeps the answer exact.
    for _ in range(PAIR_DRAWS):
        entry = pool.random(rng, ip=ip, protocol=first, reject=reject)
        if entry is None:
            return None
        twins = _twins(pool, entry, protocols, reject)
        if twins is not None:
            return twins
    candidates: list[list[Entry]] = []
    for group_ip in [ip] if ip is not None else pool.ips():
        for entry in pool.available_in(group_ip, first):
            if not reject(entry):
                twins = _twins(pool, entry, protocols, reject)
                if twins is not None:
                    candidates.append(twins)
    return rng.choice(candidates) if candidates else None


def _run(
    pool: Pool,
    rng: random.Random,
    count: int,
    protocols: tuple[str, ...],
    ip: str | None,
    reject: Reject | None,
) -> list[list[Entry]] | None:
    """A random run of ``count`` consecutive available numbers on one ip, for every protocol."""
    starts: list[tuple[str, int]] = []
    for group_ip in [ip] if ip is not None else pool.ips():
        free: set[int] | None = None
        for protocol in protocols:
            ports = {
                e.port for e in pool.available_in(group_ip, protocol)
                if reject is None or not reject(e)
            }
            free = ports if free is None else free & ports
        if not free:
            continue
        run_length, previous = 0, -2
        for port in sorted(free):
            if port == previous + 1:
                run_length += 1
            else:
                run_length = 1
            previous = port
            if run_length >= count:
                starts.append((group_ip, port - count + 1))
    if not starts:
        return None
    group_ip, first_port = rng.choice(starts)
    result: list[list[Entry]] = []
    for port in range(first_port, first_port + count):
        item = []
        for protocol in protocols:
            entry = pool.get((group_ip, port, protocol))
            assert entry is not None
            item.append(entry)
        result.append(item)
    return result
