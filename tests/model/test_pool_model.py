"""A model-based test: random sequences of every operation, checked against what clients were told.

A hypothesis state machine drives one daemon (the real app, a real SQLite file, restarts from
it, some after an entry's holder was changed in the file, a fake firewall and engine that fail
when told to, a few changes sent at once, leases and a wall clock the test moves: its steps are in
tests/model/leases.py) and keeps a reference model of every acknowledged change
(tests/model/harness.py). Each step says what the contract requires the answer to be (where
chance decides, as for claims, what it allows: an answer only from available entries, and a
refusal only when some unlucky choice could not have met it); after every step the daemon is
checked:

- no entry held twice: an entry's container is exactly the container whose bindings name it,
  no two containers bind one entry, no entry held by both a container and a lease, no in-use
  wildcard beside an in-use entry of its port; the leases listed are exactly the model's;
- every container's bindings are held by it, and the engine publishes no port its container
  does not hold; the firewall has a rule for every entry and no other;
- memory equals the file: what the API shows is what a fresh read of the SQLite file holds;
- every acknowledged change is still there (and nothing else changed): the daemon equals the model;
- never a 500, and a 503 only when an injected failure fired.

Profiles: ``LIGHTD_MODEL_PROFILE=ci`` (the default; derandomized, bounded for CI) or ``long``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from lightd.errors import Unavailable
from tests.model.harness import (
    CONTAINERS,
    IPS,
    OPERATOR,
    PORTS,
    PROTOCOLS,
    Key,
    Model,
    Served,
    key_of,
    label,
    lease_holder,
    read_file,
)
from tests.model.leases import WHEN, LeaseSteps

# No "explain" phase: it re-runs the shrunk example many times over, for lines it then names.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
settings.register_profile(
    "lightd-model-ci",
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=PHASES,
    print_blob=True,
)
settings.register_profile(
    "lightd-model-long",
    max_examples=2000,
    stateful_step_count=80,
    deadline=None,
    database=None,  # a failure prints the blob that replays it (print_blob)
    suppress_health_check=[HealthCheck.too_slow],
    phases=PHASES,
    print_blob=True,
)
PROFILE = "lightd-model-" + os.environ.get("LIGHTD_MODEL_PROFILE", "ci")

ip_ = st.sampled_from(IPS)
port_ = st.sampled_from(PORTS)
protocol_ = st.sampled_from(PROTOCOLS)
maybe_protocol = st.none() | protocol_


# Named functions, not lambdas: hypothesis reads a lambda's source to describe it, at every draw.
def any_free(ip: str | None, protocol: str) -> dict[str, Any]:
    return {"container_port": 7777, "protocol": protocol, **({"ip": ip} if ip else {})}


def given(key: Key) -> dict[str, Any]:
    return {"ip": key[0], "port": key[1], "protocol": key[2]}


def span(a: int, b: int) -> str:
    return f"{min(a, b)}-{max(a, b)}"


def has_containers(machine: PoolMachine) -> bool:
    return bool(machine.model.containers)


# (group, index, key): see PoolMachine.pick.
pick_ = st.tuples(st.integers(0, 5), st.integers(0, 63), st.tuples(ip_, port_, protocol_))
port_spec = port_ | st.builds(span, port_, port_)


class PoolMachine(LeaseSteps, RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="lightd-model-"))
        self.loop = asyncio.new_event_loop()
        self.served = Served(self.folder)
        self.model = Model()
        self.run(self.served.start())

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        try:
            self.run(self.served.stop())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            gc.unfreeze()  # Lightd.start froze this daemon's heap; let the next example's go

    # -- talking to the daemon ---------------------------------------------------------------

    def send(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> tuple[httpx.Response, list[str]]:
        self.served.faults()  # forget failures that fired outside a request (at a restart)
        response = self.run(self.served.request(method, path, body, params))
        faults = self.served.faults()
        where = f"{method} {path} {params or ''} {body!r} -> {response.status_code} {response.text}"
        assert response.status_code != 500, f"a 500: {where}"
        if response.status_code >= 500:
            assert faults and response.status_code == 503, f"a 5xx that no failure caused: {where}"
        if response.status_code >= 400:
            assert set(response.json()) >= {"error"}, f"an error without 'error': {where}"
        self.where = where
        note(where)
        # --hypothesis-show-statistics lists how often each answer came (what the run covered).
        what = path.split("/")[2 if path.startswith("/network/") else 1]
        event(f"{method} {what} {response.status_code}" + (" fault" if faults else ""))
        return response, faults

    def expect(self, response: httpx.Response, *statuses: int) -> None:
        assert response.status_code in statuses, f"expected {statuses}: {self.where}"

    def failed_by_fault(self, response: httpx.Response, faults: list[str]) -> bool:
        """An injected failure fired and the daemon refused the change (nothing may change)."""
        return bool(faults) and response.status_code in (409, 503)

    @staticmethod
    def path(ip: str, port: int, suffix: str = "") -> str:
        return f"/network/ports/{ip}/{port}{suffix}"

    # -- the pool ----------------------------------------------------------------------------

    @rule(ip=ip_, port=port_, protocol=protocol_)
    def add(self, ip: str, port: int, protocol: str) -> None:
        key = (ip, port, protocol)
        response, faults = self.send("POST", "/network/ports", {"ip": ip, "port": port, "protocol": protocol})
        if key in self.model.holders:
            return self.expect(response, 409)
        if self.failed_by_fault(response, faults):
            return None
        self.expect(response, 201)
        self.model.holders[key] = None
        return None

    @rule(
        ip=ip_,
        specs=st.lists(port_spec, min_size=1, max_size=3),
        protocol=st.sampled_from(("tcp", "udp", "both")),
    )
    def bulk_add(self, ip: str, specs: list[int | str], protocol: str) -> None:
        numbers: set[int] = set()
        for spec in specs:
            first, _, last = str(spec).partition("-")
            numbers.update(range(int(first), int(last or first) + 1))
        protocols = PROTOCOLS if protocol == "both" else (protocol,)
        keys = {(ip, n, p) for n in numbers for p in protocols}
        new = keys - set(self.model.holders)
        response, faults = self.send(
            "POST", "/network/ports/bulk", {"ip": ip, "ports": specs, "protocol": protocol}
        )
        if new and self.failed_by_fault(response, faults):
            return
        self.expect(response, 201)
        body = response.json()
        assert (body["added_count"], body["skipped_count"]) == (len(new), len(keys - new)), self.where
        self.model.holders.update(dict.fromkeys(new))

    def pick(self, data: st.DataObject, groups: list[list[Key]], what: str) -> Key:
        """One key: from the group a fixed-shape draw names, or the draw's own key when that
        group is empty. (A strategy shaped by the state, such as sampled_from(the free entries),
        would replay as something else once the shrinker drops an earlier step.)"""
        group, index, fallback = data.draw(pick_, label=what)
        members = groups[group] if group < len(groups) else []
        return members[index % len(members)] if members else fallback

    def named(self, data: st.DataObject) -> tuple[str, int, str | None]:
        """An entry as a path names it (protocol optional): mostly one of the pool, often one a
        container holds, sometimes one that does not exist."""
        bound = sorted(k for keys in self.model.containers.values() for k in keys)
        used = sorted(k for k, holder in self.model.holders.items() if holder is not None)
        leased = sorted(k for k in self.model.holders if self.model.leased(k))
        existing = sorted(self.model.holders)
        ip, port, protocol = self.pick(data, [bound, bound, used, leased, existing], "entry")
        bare = data.draw(st.booleans(), label="without ?protocol=")
        return ip, port, None if bare else protocol

    def found(self, response: httpx.Response, key: Key | str) -> Key | None:
        """The entry a path named, or None once the answer for a missing (404) or ambiguous
        (409) one was checked."""
        if key == "missing":
            self.expect(response, 404)
            return None
        if key == "ambiguous":
            self.expect(response, 409)
            return None
        assert isinstance(key, tuple)
        return key

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        ip, port, protocol = self.named(data)
        named = self.model.resolve(ip, port, protocol)
        response, faults = self.send(
            "DELETE", self.path(ip, port), params={"protocol": protocol} if protocol else None
        )
        key = self.found(response, named)
        if key is None:
            return None
        if self.model.holders[key] not in (None, OPERATOR):
            self.expect(response, 409)  # only its container (or lease) frees its entry
            return self.check_lease_refusal(response, key)
        if self.failed_by_fault(response, faults):
            return None
        self.expect(response, 200)
        del self.model.holders[key]
        return None

    @rule(data=st.data())
    def delete_in_bulk(self, data: st.DataObject) -> None:
        items = [self.named(data) for _ in range(data.draw(st.integers(1, 4), label="items"))]
        resolved = [self.model.resolve(*item) for item in items]
        body = {
            "ports": [{"ip": ip, "port": port, **({"protocol": p} if p else {})} for ip, port, p in items]
        }
        response, faults = self.send("POST", "/network/ports/bulk-delete", body)
        if "ambiguous" in resolved:
            return self.expect(response, 409)  # and nothing deleted
        keys = {k for k in resolved if isinstance(k, tuple)}
        deleted = {k for k in keys if self.model.holders[k] in (None, OPERATOR)}
        if deleted and self.failed_by_fault(response, faults):
            return None
        self.expect(response, 200)
        answer = response.json()
        assert answer["deleted_count"] == len(deleted), self.where
        assert {key_of(e) for e in answer["skipped"]} == keys - deleted, self.where
        missing = {item for item, k in zip(items, resolved, strict=True) if k == "missing"}
        assert len(answer["not_found"]) == len(missing), self.where
        for entry in answer["skipped"]:
            lease_id = self.model.leased(key_of(entry))
            event(f"bulk-delete skipped an entry held by {'a lease' if lease_id else 'a container'}")
            assert lease_id is None or entry["reason"] == f"held by lease {lease_id}", self.where
        for key in deleted:
            del self.model.holders[key]
        return None

    @rule(data=st.data(), in_use=st.booleans())
    def set_use(self, data: st.DataObject, in_use: bool) -> None:
        ip, port, protocol = self.named(data)
        named = self.model.resolve(ip, port, protocol)
        response, _ = self.send(
            "PUT",
            self.path(ip, port, "/use"),
            {"in_use": in_use},
            params={"protocol": protocol} if protocol else None,
        )
        key = self.found(response, named)
        if key is None:
            return None
        holder = self.model.holders[key]
        by = {None: "nobody", OPERATOR: "the operator"}.get(holder, "a container")
        event(f"PUT use {in_use} on an entry held by {'a lease' if self.model.leased(key) else by}")
        if in_use and holder is None and self.model.blockers(key):
            return self.expect(response, 409)
        if not in_use and holder not in (None, OPERATOR):
            self.expect(response, 409)  # naming the container or lease that holds it
            return self.check_lease_refusal(response, key)
        self.expect(response, 200)
        changed = (holder is None) if in_use else (holder == OPERATOR)
        answer = response.json()
        assert (answer["changed"], answer["in_use"]) == (changed, in_use), self.where
        if changed:
            self.model.holders[key] = OPERATOR if in_use else None
        return None

    @rule(
        count=st.integers(1, 3),
        protocol=st.sampled_from(("tcp", "udp", "both")),
        ip=st.none() | ip_,
        contiguous=st.booleans(),
    )
    def claim(self, count: int, protocol: str, ip: str | None, contiguous: bool) -> None:
        claimed = self.claim_with(count, protocol, ip, contiguous)
        if claimed is not None:
            assert claimed[1].get("lease") is None, f"a claim without a ttl made a lease: {self.where}"
            for key in claimed[0]:
                self.model.holders[key] = OPERATOR

    def claim_with(
        self, count: int, protocol: str, ip: str | None, contiguous: bool, extra: dict[str, Any] | None = None
    ) -> tuple[list[Key], dict[str, Any]] | None:
        """Send a claim and check its answer; the entries claimed and the answer (None if refused)."""
        body: dict[str, Any] = {"count": count, "protocol": protocol, "contiguous": contiguous}
        body.update(extra or {})
        if ip is not None:
            body["ip"] = ip
        response, _ = self.send("POST", "/network/ports/claim", body)
        protocols = PROTOCOLS if protocol == "both" else (protocol,)
        if response.status_code == 409:
            assert not self.claim_certain(count, protocols, ip, contiguous), (
                f"a claim the pool can meet was refused: {self.where}"
            )
            return None
        self.expect(response, 200)
        keys = [key_of(e) for e in response.json()["ports"]]
        numbers = sorted({(k[0], k[1]) for k in keys})
        assert len(keys) == len(set(keys)) == count * len(protocols), self.where
        assert sorted(keys) == sorted((i, n, p) for i, n in numbers for p in protocols), self.where
        assert ip is None or all(k[0] == ip for k in keys), self.where
        if contiguous:
            assert len({i for i, _ in numbers}) == 1, self.where
            assert [n for _, n in numbers] == list(range(numbers[0][1], numbers[0][1] + count))
        taking: set[Key] = set()
        for key in keys:
            assert self.model.available(key, taking), (
                f"claimed {label(key)}, which was not available: {self.where}"
            )
            taking.add(key)
        return keys, response.json()

    def claim_certain(self, count: int, protocols: tuple[str, ...], ip: str | None, contiguous: bool) -> bool:
        """Whether every way of choosing (however unlucky) meets the claim."""
        free = {
            k[:2]
            for k in self.model.matching(ip, None)
            if all(self.model.available((k[0], k[1], p)) for p in protocols)
        }
        if contiguous:
            return any(all((i, n + step) in free for step in range(count)) for i, n in free)
        # A wildcard number taken first blocks its specific ones: count one per port then.
        slots: dict[tuple[int, int], list[str]] = {}
        for i, n in free:
            slots.setdefault((6 if ":" in i else 4, n), []).append(i)
        worst = sum(1 if "0.0.0.0" in ips or "::" in ips else len(ips) for ips in slots.values())
        return worst >= count

    @rule(ip=st.none() | ip_, protocol=maybe_protocol)
    def random(self, ip: str | None, protocol: str | None) -> None:
        params = {k: v for k, v in (("ip", ip), ("protocol", protocol)) if v}
        response, _ = self.send("GET", "/network/ports/random", params=params)
        if not any(self.model.available(k) for k in self.model.matching(ip, protocol)):
            return self.expect(response, 404)
        self.expect(response, 200)
        key = key_of(response.json())
        assert key in self.model.matching(ip, protocol) and self.model.available(key), self.where
        return None

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        ip, port, protocol = self.named(data)
        named = self.model.resolve(ip, port, protocol)
        response, _ = self.send(
            "GET", self.path(ip, port), params={"protocol": protocol} if protocol else None
        )
        key = self.found(response, named)
        if key is None:
            return None
        self.expect(response, 200)
        holder = self.model.holders[key]
        answer = response.json()
        assert answer["in_use"] == (holder is not None), self.where
        assert answer.get("container") == (holder if holder in self.model.containers else None)
        assert answer["lease"] == self.model.leased(key), self.where
        return None

    # -- containers --------------------------------------------------------------------------

    def port_requests(self, data: st.DataObject, least: int = 0) -> list[dict[str, Any]]:
        """Up to three bindings: mostly free entries of the pool, some leased (a container takes
        them over), taken or missing ones, and requests for any free port (on an ip, or on any)."""
        free = sorted(k for k in self.model.holders if self.model.available(k))
        leased = sorted(k for k in self.model.holders if self.model.leased(k))
        requests: list[dict[str, Any]] = []
        for _ in range(data.draw(st.integers(least, 3), label="ports")):
            if data.draw(st.integers(0, 5), label="any free port?") == 5:
                ip = data.draw(st.none() | ip_, label="on ip")
                requests.append(any_free(ip, data.draw(protocol_, label="protocol")))
            else:
                requests.append(given(self.pick(data, [free, free, free, leased], "entry")))
        return requests

    def container_id(self, data: st.DataObject) -> str:
        """Mostly one that exists."""
        existing = sorted(self.model.containers)
        group, index = data.draw(st.tuples(st.integers(0, 3), st.integers(0, 63)), label="id")
        if existing and group < 3:
            return existing[index % len(existing)]
        return CONTAINERS[index % len(CONTAINERS)]

    @initialize(data=st.data(), count=st.integers(0, 2))
    def first_containers(self, data: st.DataObject, count: int) -> None:
        """Most runs start with containers holding ports, so that steps meet them often."""
        for internal_id in CONTAINERS[:count]:
            self.create(internal_id, data, least=1)

    # hypothesis draws the first rule most often (rules sort by number of arguments, then name):
    # let that be creating a container, the operation that most other bugs need first.
    @rule(data=st.data())
    def create_container(self, data: st.DataObject) -> None:
        """Mostly under an id not taken yet; sometimes a taken one (409)."""
        unused = [c for c in CONTAINERS if c not in self.model.containers]
        taken, index = data.draw(st.tuples(st.integers(0, 7), st.integers(0, 63)), label="id")
        names = unused if unused and taken < 7 else CONTAINERS
        self.create(names[index % len(names)], data)

    def create(self, internal_id: str, data: st.DataObject, least: int = 0) -> None:
        ports = self.port_requests(data, least)
        response, faults = self.send(
            "POST",
            "/containers",
            {"internal_id": internal_id, "image": "localhost/model:latest", "ports": ports},
        )
        if internal_id in self.model.containers:
            return self.expect(response, 409)
        self.bind(internal_id, ports, response, faults, 201)
        return None

    @precondition(has_containers)
    @rule(data=st.data())
    def rebind(self, data: st.DataObject) -> None:
        internal_id = self.container_id(data)
        ports = self.port_requests(data)
        response, faults = self.send("POST", f"/containers/{internal_id}/rebind-network", {"ports": ports})
        if internal_id not in self.model.containers:
            return self.expect(response, 404)
        self.bind(internal_id, ports, response, faults, 200)
        return None

    def bind(
        self,
        holder: str,
        ports: list[dict[str, Any]],
        response: httpx.Response,
        faults: list[str],
        success: int,
    ) -> None:
        """Check a create or rebind against the contract, and note what it acknowledged."""
        if all("port" in p for p in ports):
            problem = self.model.problem([key_of(p) for p in ports], holder)
            allowed = {
                "missing": (404, 409),
                "taken": (409,),
                "blocked": (409,),
                "twice": (400, 409),
                "blocked_by_own": (409, success),
            }.get(problem or "")
            if allowed is not None:
                self.expect(response, *allowed, *((503,) if faults else ()))
            elif not self.failed_by_fault(response, faults):
                self.expect(response, success)
        elif response.status_code != success:
            # Random picks may land on an entry named later ("twice") or run out.
            self.expect(response, 400, 409, 503)
            if faults or len(ports) > 1 or response.status_code == 400:
                return
            [request] = ports
            candidates = self.model.matching(request.get("ip"), request["protocol"])
            assert not any(self.model.available(k) for k in candidates), (
                f"no port given to a container while one was free: {self.where}"
            )
        if response.status_code != success:
            return
        bindings = response.json()["ports"]
        assert len(bindings) == len(ports), self.where
        keys = [key_of(b) for b in bindings]
        for request, binding, key in zip(ports, bindings, keys, strict=True):
            if "port" in request:
                assert key == key_of(request), self.where
            else:
                assert key[2] == request["protocol"], self.where
                assert request.get("ip") in (None, key[0]), self.where
                assert not self.model.leased(key), f"a leased entry given as a free one: {self.where}"
            assert binding["container_port"] == request.get("container_port", key[1]), self.where
        assert self.model.problem(keys, holder) in (None, "blocked_by_own"), (
            f"{holder} was given entries it may not have: {self.where}"
        )
        if any(self.model.leased(k) for k in keys):
            event("a container took leased entries over")
        self.model.take(holder, keys)

    @precondition(has_containers)
    @rule(data=st.data())
    def delete_container(self, data: st.DataObject) -> None:
        internal_id = self.container_id(data)
        response, faults = self.send("DELETE", f"/containers/{internal_id}")
        if internal_id not in self.model.containers:
            return self.expect(response, 404)
        if self.failed_by_fault(response, faults):
            return None
        self.expect(response, 200)
        freed = {key_of(e) for e in response.json()["freed"]}
        assert freed == set(self.model.containers[internal_id]), self.where
        self.model.drop(internal_id)
        return None

    @precondition(has_containers)
    @rule(data=st.data())
    def get_container(self, data: st.DataObject) -> None:
        internal_id = self.container_id(data)
        response, _ = self.send("GET", f"/containers/{internal_id}")
        if internal_id not in self.model.containers:
            return self.expect(response, 404)
        self.expect(response, 200)
        ports = [key_of(p) for p in response.json()["ports"]]
        assert sorted(ports) == sorted(self.model.containers[internal_id]), self.where
        return None

    # -- changes at once ---------------------------------------------------------------------

    @rule(data=st.data())
    def race(self, data: st.DataObject) -> None:
        """Two or three changes for the same port sent at once (containers, PUT use, a claim).
        The answers must fit some order of the changes: no entry given twice, and one of them
        wins when the first alone would."""
        self.served.engine.failing.clear()  # a race has enough going on without failures
        self.served.firewall.failing.clear()
        free = sorted(k for k in self.model.holders if self.model.available(k))
        if not free:
            return
        target = free[data.draw(st.integers(0, 63), label="port") % len(free)]
        # Entries of one port and protocol: the same entry, or a wildcard and a specific one.
        slot = sorted(k for k in self.model.holders if k[1:] == target[1:])
        unused = [c for c in CONTAINERS if c not in self.model.containers]
        changes: list[tuple[str, Any]] = []
        for _ in range(data.draw(st.integers(2, 3), label="changes")):
            kind = data.draw(st.sampled_from(("create", "use", "claim")), label="change")
            key = slot[data.draw(st.integers(0, 63), label="entry") % len(slot)]
            if kind == "create" and unused:
                changes.append(("create", (unused.pop(0), key)))
            elif kind == "claim":
                changes.append(("claim", key[::2]))
            else:
                changes.append(("use", key))
        responses = self.run(self.at_once([self.race_request(kind, arg) for kind, arg in changes]))
        self.served.faults()
        outcome = [
            (kind, arg, r.status_code, r.json()) for (kind, arg), r in zip(changes, responses, strict=True)
        ]
        for kind, arg, status, _ in outcome:
            where = f"race {changes}: {kind} {arg} -> {status}"
            note(where)
            event(f"race {kind} {status}")
            assert status in (200, 201, 409), where
        orders = itertools.permutations(outcome)
        final = next((m for m in (self.apply_in_order(o) for o in orders) if m is not None), None)
        assert final is not None, f"no order of the changes explains the answers: {outcome}"
        kind, arg, status, _ = outcome[0]
        if all(s == 409 for _, _, s, _ in outcome) and self.alone_succeeds(kind, arg):
            raise AssertionError(f"every change of a race was refused: {outcome}")
        self.model = final

    @staticmethod
    async def at_once(requests: list[Any]) -> list[httpx.Response]:
        return list(await asyncio.gather(*requests))

    def race_request(self, kind: str, arg: Any) -> Any:
        if kind == "create":
            internal_id, key = arg
            body = {"internal_id": internal_id, "image": "localhost/model:latest", "ports": [given(key)]}
            return self.served.request("POST", "/containers", body)
        if kind == "claim":
            ip, protocol = arg
            return self.served.request("POST", "/network/ports/claim", {"ip": ip, "protocol": protocol})
        ip, port, protocol = arg
        return self.served.request(
            "PUT", self.path(ip, port, "/use"), {"in_use": True}, params={"protocol": protocol}
        )

    def apply_in_order(self, outcome: Any) -> Model | None:
        """The model after these answers in this order, or None if they cannot come in it."""
        model = self.model.copy()
        for kind, arg, status, body in outcome:
            if status == 409:
                continue
            if kind == "create":
                internal_id, key = arg
                if internal_id in model.containers or model.problem([key], internal_id) is not None:
                    return None
                model.take(internal_id, [key])
            elif kind == "claim":
                [key] = [key_of(e) for e in body["ports"]]
                if key[::2] != arg or not model.available(key):
                    return None
                model.holders[key] = OPERATOR
            elif body["changed"]:
                if not model.available(arg):
                    return None
                model.holders[arg] = OPERATOR
            elif model.holders[arg] is None:
                return None
        return model

    def alone_succeeds(self, kind: str, arg: Any) -> bool:
        if kind == "create":
            return self.model.problem([arg[1]], arg[0]) is None
        if kind == "claim":
            return any(self.model.available(k) for k in self.model.matching(*arg))
        return self.model.holders[arg] is not None or not self.model.blockers(arg)

    # -- restarts and failures ---------------------------------------------------------------

    @rule(
        reconcile_fails=st.booleans(),
        engine_list_fails=st.booleans(),
        down=st.sampled_from(("no time", *WHEN)),
    )
    def restart(self, reconcile_fails: bool, engine_list_fails: bool, down: str) -> None:
        """Stop the daemon and build a new one on the same file (the fakes keep their state);
        its start-up may find the firewall or the engine failing, and leases that ran out while
        it was down (it frees them before it serves)."""
        if reconcile_fails:
            self.served.firewall.fail_next("reconcile")
        if engine_list_fails:
            self.served.engine.fail_next("list_managed")
        self.run(self.served.stop())
        if down != "no time":
            self.move_clock(down)
        due = self.model.due(self.served.clock.now)
        self.run(self.served.start())
        self.check_freed_in_file([k for i in due for k in self.model.lease_keys(i)])
        self.expire_in_model()
        assert self.served.lightd is not None
        startup = self.served.lightd.startup
        report = startup.get("containers", {})
        assert not report.get("rolled_back"), f"a change was left half done: {startup}"
        repaired = startup.get("holders", {}).get("count", 0)
        assert not repaired, f"a clean stop left holders to repair: {startup['holders']}"

    @rule(data=st.data(), how=st.sampled_from(("free", "operator", "other container", "ghost")))
    def tamper_and_restart(self, data: st.DataObject, how: str) -> None:
        """Change one entry's holder in the file while the daemon is stopped (a bug of an older
        lightd, a hand edit): the start-up cross-check must repair it the safe way. An entry a
        container binds goes back to it; one held by a container that does not bind it stays in
        use, held by the operator (leak rather than double-allocate)."""
        bound = sorted(k for keys in self.model.containers.values() for k in keys)
        free = sorted(k for k in self.model.holders if self.model.available(k))
        group = free if how == "ghost" else bound
        if not group:
            return
        key = group[data.draw(st.integers(0, 63), label="entry") % len(group)]
        stored: tuple[int, str | None] = {
            "free": (0, None),
            "operator": (1, None),
            "other container": (1, next(c for c in CONTAINERS if c != self.model.holders[key])),
            "ghost": (1, "ghost"),
        }[how]
        note(f"tamper: {label(key)} stored as in_use={stored[0]}, container={stored[1]}")
        self.run(self.served.stop())
        self.served.store_holder(key, *stored)
        self.run(self.served.start())
        if how == "ghost":
            self.model.holders[key] = OPERATOR
        assert self.served.lightd is not None
        startup = self.served.lightd.startup
        assert startup.get("holders", {}).get("count", 1), f"nothing repaired: {startup}"

    @rule(method=st.sampled_from(("open", "close")))
    def fail_firewall(self, method: str) -> None:
        self.served.firewall.fail_next(method)

    @rule(
        method=st.sampled_from(("create", "start", "stop", "remove", "rename", "inspect")),
        after=st.integers(0, 1),
        port_in_use=st.booleans(),
    )
    def fail_engine(self, method: str, after: int, port_in_use: bool) -> None:
        """The engine refuses a later call: the next one of ``method``, or the one after (a
        rebind removes a leftover container before the old one)."""
        error = None
        if method == "create" and port_in_use:
            error = Unavailable("bind: address already in use (test failure)", reason="port_in_use")
        self.served.engine.fail_next(method, error, after=after)

    # -- after every step --------------------------------------------------------------------

    @invariant()
    def consistent(self) -> None:
        entries = self.run(self.served.request("GET", "/network/ports")).json()["ports"]
        containers = self.run(self.served.request("GET", "/containers")).json()["containers"]
        by_key = {key_of(e): e for e in entries}
        bound: dict[Key, str] = {}
        for container in containers:
            assert container["state"] in ("running", "missing"), f"left half done: {container}"
            for key in map(key_of, container["ports"]):
                assert key not in bound, (
                    f"entry held twice: {label(key)} by {bound.get(key)} and {container['internal_id']}"
                )
                bound[key] = container["internal_id"]
        for key, entry in by_key.items():
            held = (entry["container"], entry["lease"])
            assert entry["in_use"] or held == (None, None), f"free but held: {entry}"
            assert entry["container"] is None or entry["lease"] is None, f"entry held twice: {entry}"
            assert entry["container"] == bound.get(key), (
                f"entry held twice: {label(key)} says container {entry['container']}, "
                f"bindings say {bound.get(key)}"
            )
        for key, holder in bound.items():
            assert key in by_key, f"{holder}'s binding {label(key)} is not in the pool"
        used = {k for k, e in by_key.items() if e["in_use"]}
        for ip, port, protocol in used:
            wildcard = ("::" if ":" in ip else "0.0.0.0", port, protocol)
            assert ip == wildcard[0] or wildcard not in used, (
                f"entry held twice: {label(wildcard)} and {label((ip, port, protocol))} are both "
                "in use, and the kernel binds only one of them"
            )
        self.check_engine(bound)
        assert self.served.firewall.open_keys == set(by_key), (
            f"firewall rules {sorted(self.served.firewall.open_keys)} != pool {sorted(by_key)}"
        )
        self.check_file(entries, containers)
        self.check_model(by_key, containers)

    def check_engine(self, bound: dict[Key, str]) -> None:
        published: dict[Key, str] = {}
        for info in self.served.engine.containers.values():
            for binding in info["bindings"]:
                key = binding.key
                assert key not in published, (
                    f"engine publishes {label(key)} twice: {published[key]} and {info['name']}"
                )
                published[key] = str(info["name"])
                assert bound.get(key) == info["internal_id"], (
                    f"engine container {info['name']} publishes {label(key)}, which the pool "
                    f"gives to {bound.get(key) or 'nobody'}"
                )

    def check_file(self, entries: list[dict[str, Any]], containers: list[dict[str, Any]]) -> None:
        rows, stored = read_file(self.served.database)
        memory = sorted(
            (e["ip"], e["port"], e["protocol"], int(e["in_use"]), e["container"], e.get("note"), e["lease"])
            for e in entries
        )
        assert memory == rows, f"memory differs from the file: {memory} != {rows}"
        assert {c["internal_id"] for c in containers} == set(stored), "containers differ from file"
        for container in containers:
            body = stored[container["internal_id"]]
            in_file = [list(b) for b in body["bindings"]]
            in_memory = [[p["ip"], p["port"], p["protocol"], p["container_port"]] for p in container["ports"]]
            assert in_memory == in_file, f"memory differs from the file: {container} != {body}"
            assert (container["state"], container["engine_id"]) == (body["state"], body["engine_id"]), (
                f"memory differs from the file: {body}"
            )

    def check_model(self, by_key: dict[Key, dict[str, Any]], containers: list[dict[str, Any]]) -> None:
        told = self.model.holders
        lost = sorted(set(told) - set(by_key)) + sorted(set(by_key) - set(told))
        assert not lost, f"acknowledged change lost: entries {lost} differ from what clients were told"
        for key, entry in by_key.items():
            lease = lease_holder(entry["lease"]) if entry["lease"] else None
            holder = entry["container"] or lease or (OPERATOR if entry["in_use"] else None)
            assert holder == told[key], (
                f"acknowledged change lost: {label(key)} is held by {holder}, clients were told {told[key]}"
            )
        have = {c["internal_id"]: sorted(map(key_of, c["ports"])) for c in containers}
        assert have == {k: sorted(v) for k, v in self.model.containers.items()}, (
            f"acknowledged change lost: containers {have} != {self.model.containers}"
        )


PoolMachine.TestCase.settings = settings.get_profile(PROFILE)
TestPoolModel = PoolMachine.TestCase
