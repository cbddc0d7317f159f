"""The model-based test's lease steps (CONTRACT13, "Leases"), mixed into its state machine.

A lease is one more holder (``lease_holder(id)`` in the model, never the operator). The daemon's
wall clock is the harness's :class:`~tests.model.harness.Clock`, which only these steps move: by
amounts just before, at and after the next expiry (then ``daemon.leases.expire_due()``, the
sweeper's own function, runs), or while the daemon is stopped (its start-up frees the leases due).
After every step the leases the API lists must be the model's: ids, order, ttl, expiry, entries.
"""

from __future__ import annotations

import math
import re
import time
from typing import TYPE_CHECKING, Any

import httpx
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule

from tests.model.harness import CONTAINERS, OPERATOR, Key, Lease, key_of, lease_holder, read_file

if TYPE_CHECKING:
    from tests.model.test_pool_model import PoolMachine

__all__ = ["LeaseSteps", "rfc3339"]

LEASE_ID = re.compile(r"lease_[0-9a-f]{16}")
UNKNOWN = ("lease_00000000deadbeef", "not-a-lease")
GOOD_TTLS = (1, 2, 5, 60, 86_400)
ttl_ = st.sampled_from(GOOD_TTLS)
# Refused with 400 (CONTRACT13: a JSON integer 1..86400, not a bool, float or string).
BAD_TTLS = (0, -5, 86_401, True, 2.5, "5")
bad_ttl = st.sampled_from(BAD_TTLS)
# A claim's ttl: mostly a good one (each good one twice as likely as each bad one).
claim_ttl = st.sampled_from(GOOD_TTLS * 2 + BAD_TTLS)
# How far the clock moves: to just before, at or just after the next expiry, or past every lease.
WHEN = ("before", "at", "after", "far")


def rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class LeaseSteps:
    """Rules and the invariant for leases; ``self`` is the PoolMachine."""

    # -- helpers the machine's own steps use too ----------------------------------------------

    def lease_id(self: PoolMachine, data: st.DataObject) -> str:
        """Mostly a live lease; sometimes one that is gone, or one that never was (all 404)."""
        group, index = data.draw(st.tuples(st.integers(0, 8), st.integers(0, 63)), label="lease")
        live, gone = list(self.model.leases), self.model.gone
        if live and group < 7:
            return live[index % len(live)]
        if gone and group < 8:
            return gone[index % len(gone)]
        return UNKNOWN[index % len(UNKNOWN)]

    def check_lease_refusal(self: PoolMachine, response: httpx.Response, key: Key) -> None:
        """A 409 for freeing or deleting a leased entry names the lease and how to free it."""
        lease_id = self.model.leased(key)
        if lease_id is None:
            return
        event("409 for a leased entry")
        answer = response.json()
        assert lease_id in answer["error"], f"the refusal does not name the lease: {self.where}"
        assert answer.get("held_by") == {"kind": "lease", "name": lease_id}, self.where

    def check_leased_entry(self: PoolMachine, entry: dict[str, Any], lease_id: str) -> None:
        assert (entry["in_use"], entry["container"], entry["lease"]) == (True, None, lease_id), (
            f"a leased entry shows {entry}: {self.where}"
        )

    def check_lease(self: PoolMachine, lease: dict[str, Any], lease_id: str, full: bool = True) -> None:
        """A lease object (a claim's summary when not ``full``) against the model's lease."""
        told = self.model.leases[lease_id]
        where = f"lease {lease_id}: {lease} (told: {told})"
        assert lease["id"] == lease_id, where
        assert (lease["ttl"], lease["expires_at"]) == (told.ttl, rfc3339(told.expires_at)), where
        if not full:
            return
        claimed = {rfc3339(math.floor(told.claimed)), rfc3339(math.ceil(told.claimed))}
        assert lease["created_at"] in claimed, f"created_at is not the claim's time: {where}"
        keys = [key_of(e) for e in lease["ports"]]
        assert sorted(keys) == self.model.lease_keys(lease_id), where
        for entry in lease["ports"]:
            self.check_leased_entry(entry, lease_id)

    def move_clock(self: PoolMachine, when: str) -> None:
        """Advance the clock relative to the next expiry (to after every lease: ``far``)."""
        clock = self.served.clock
        if when == "far" or not self.model.leases:
            step = 86_401.0 if when == "far" else 1.25
        else:
            to_next = min(lease.expires_at for lease in self.model.leases.values()) - clock.now
            step = {"before": max(0.0, to_next - 0.25), "at": to_next, "after": to_next + 0.75}[when]
        clock.advance(step)
        event(f"clock {when}: {len(self.model.due(clock.now))} of {len(self.model.leases)} leases due")

    def expire_in_model(self: PoolMachine) -> list[str]:
        due = self.model.due(self.served.clock.now)
        for lease_id in due:
            self.model.end_lease(lease_id)
        return due

    def check_freed_in_file(self: PoolMachine, keys: list[Key]) -> None:
        """The entries of leases that ran out while the daemon was down are free in the file as
        soon as it has started (before it served anything)."""
        rows = {row[:3]: row for row in read_file(self.served.database)[0]}
        held = [rows[key] for key in keys if rows[key][3] or rows[key][6] is not None]
        assert not held, f"leases that ran out while the daemon was down still hold {held}"

    # -- the steps -----------------------------------------------------------------------------

    @initialize(
        leases=st.lists(st.tuples(st.integers(1, 2), st.sampled_from(("tcp", "both")), ttl_), max_size=2)
    )
    def first_leases(self: PoolMachine, leases: list[tuple[int, str, int]]) -> None:
        """Most runs start with a lease or two, so that steps meet leased entries often."""
        for count, protocol, ttl in leases:
            self.lease_claim(count, protocol, None, False, ttl)

    @rule(
        count=st.integers(1, 3),
        protocol=st.sampled_from(("tcp", "udp", "both")),
        ip=st.none() | st.sampled_from(("0.0.0.0", "127.0.0.1", "::")),
        contiguous=st.booleans(),
        ttl=claim_ttl,
    )
    def claim_lease(
        self: PoolMachine, count: int, protocol: str, ip: str | None, contiguous: bool, ttl: Any
    ) -> None:
        self.lease_claim(count, protocol, ip, contiguous, ttl)

    def lease_claim(
        self: PoolMachine, count: int, protocol: str, ip: str | None, contiguous: bool, ttl: Any
    ) -> None:
        if ttl not in GOOD_TTLS or isinstance(ttl, bool):
            response, _ = self.send("POST", "/network/ports/claim", {"count": count, "ttl": ttl})
            return self.expect(response, 400)
        claimed = self.claim_with(count, protocol, ip, contiguous, {"ttl": ttl})
        event(f"lease claim {'refused' if claimed is None else 'made'}")
        if claimed is None:
            return None
        keys, answer = claimed
        summary = answer["lease"]
        lease_id = summary["id"]
        assert LEASE_ID.fullmatch(lease_id), f"a lease id not of the contract's form: {self.where}"
        assert lease_id not in self.model.leases and lease_id not in self.model.gone, self.where
        now = self.served.clock.now
        self.model.leases[lease_id] = Lease(Lease.expiry(now, ttl), ttl, now)
        self.check_lease(summary, lease_id, full=False)
        for entry in answer["ports"]:
            self.check_leased_entry(entry, lease_id)
        for key in keys:
            self.model.holders[key] = lease_holder(lease_id)
        return None

    @rule(data=st.data())
    def get_lease(self: PoolMachine, data: st.DataObject) -> None:
        lease_id = self.lease_id(data)
        response, _ = self.send("GET", f"/network/leases/{lease_id}")
        event(f"lease get {response.status_code}")
        if lease_id not in self.model.leases:
            self.expect(response, 404)
            assert response.json()["error"] == "Lease not found", self.where
            return
        self.expect(response, 200)
        self.check_lease(response.json(), lease_id)

    @rule(data=st.data(), how=st.sampled_from(("ttl", "no body", "ttl", "{}", "bad ttl")))
    def renew(self: PoolMachine, data: st.DataObject, how: str) -> None:
        lease_id = self.lease_id(data)
        body: Any = {"no body": None, "{}": {}}.get(how)
        if how == "ttl":
            body = {"ttl": data.draw(ttl_, label="ttl")}
        elif how == "bad ttl":
            body = {"ttl": data.draw(bad_ttl, label="ttl")}
        response, _ = self.send("POST", f"/network/leases/{lease_id}/renew", body)
        event(f"lease renew ({how}) {response.status_code}")
        if how == "bad ttl":
            return self.expect(response, 400, *((404,) if lease_id not in self.model.leases else ()))
        if lease_id not in self.model.leases:
            return self.expect(response, 404)
        self.expect(response, 200)
        lease = self.model.leases[lease_id]
        lease.ttl = body["ttl"] if how == "ttl" else lease.ttl
        lease.expires_at = Lease.expiry(self.served.clock.now, lease.ttl)
        self.check_lease(response.json(), lease_id)
        return None

    @rule(data=st.data(), keep=st.booleans())
    def release_or_keep(self: PoolMachine, data: st.DataObject, keep: bool) -> None:
        """DELETE a lease (its entries freed) or keep it (they stay in use, held by the operator)."""
        lease_id = self.lease_id(data)
        if keep:
            response, _ = self.send("POST", f"/network/leases/{lease_id}/keep")
        else:
            response, _ = self.send("DELETE", f"/network/leases/{lease_id}")
        event(f"lease {'keep' if keep else 'release'} {response.status_code}")
        if lease_id not in self.model.leases:
            return self.expect(response, 404)
        self.expect(response, 200)
        answer = response.json()
        message, listed = ("Lease kept", "kept") if keep else ("Lease released", "freed")
        assert answer["message"] == message, self.where
        keys = self.model.end_lease(lease_id, OPERATOR if keep else None)
        assert sorted(key_of(e) for e in answer[listed]) == keys, self.where
        for entry in answer[listed]:
            assert (entry["in_use"], entry["container"], entry["lease"]) == (keep, None, None), self.where
        return None

    @rule(data=st.data(), rebind=st.booleans())
    def take_over(self: PoolMachine, data: st.DataObject, rebind: bool) -> None:
        """A container created (or rebound) on entries leases hold, some free ones beside them:
        it takes them over; a lease it took every entry of is gone, the others keep the rest."""
        leased = sorted(k for k in self.model.holders if self.model.leased(k))
        free = sorted(k for k in self.model.holders if self.model.available(k))
        keys = [self.pick(data, [leased, leased, free], "entry") for _ in range(data.draw(st.integers(1, 3)))]
        ports = [{"ip": ip, "port": port, "protocol": protocol} for ip, port, protocol in keys]
        unused = [c for c in CONTAINERS if c not in self.model.containers]
        if rebind and self.model.containers:
            internal_id = self.container_id(data)
            response, faults = self.send(
                "POST", f"/containers/{internal_id}/rebind-network", {"ports": ports}
            )
            success = 200
        elif unused:
            internal_id = unused[0]
            body = {"internal_id": internal_id, "image": "localhost/model:latest", "ports": ports}
            response, faults = self.send("POST", "/containers", body)
            success = 201
        else:
            return
        event(f"take over ({'rebind' if success == 200 else 'create'}) {response.status_code}")
        if internal_id not in self.model.containers and success == 200:
            return self.expect(response, 404)
        self.bind(internal_id, ports, response, faults, success)
        return None

    @rule(when=st.sampled_from(WHEN[1:]))
    def clock_moves(self: PoolMachine, when: str) -> None:
        """The clock moves to just before the next expiry, then to it, past it or past every
        lease; after each move the sweeper's function runs and only the leases due are gone."""
        for step in ("before", when):
            self.move_clock(step)
            assert self.served.lightd is not None
            expired = self.run(self.served.lightd.leases.expire_due())
            due = self.expire_in_model()
            # The ~1 s sweeper may have run in between (it reads the same clock): it took the rest.
            now = self.served.clock.now
            assert set(expired) <= set(due), f"expired {expired}, only {due} were due at {now}"
            assert len(expired) == len(set(expired)), f"expired twice: {expired}"
            self.leases_agree()

    # -- after every step ----------------------------------------------------------------------

    @invariant()
    def leases_agree(self: PoolMachine) -> None:
        """The leases listed are the model's, sorted by expiry then id, each as it was told."""
        response = self.run(self.served.request("GET", "/network/leases"))
        assert response.status_code == 200, response.text
        leases = response.json()["leases"]
        told = sorted(self.model.leases, key=self.model.lease_order)
        listed = [lease["id"] for lease in leases]
        assert listed == told, f"acknowledged change lost: leases {listed}, clients were told {told}"
        for lease in leases:
            self.check_lease(lease, lease["id"])
