"""The model-based test's parts: a daemon on a real SQLite file, and the reference model.

:class:`Served` runs :class:`lightd.bootstrap.Lightd` in-process with a fake firewall and engine
(which outlive it, as the host's own do) and talks to it through the real app over
``httpx.ASGITransport``; ``restart`` stops it and builds a new one on the same file.

:class:`Model` is what clients were told: every entry and its holder, every container and its
bindings, every lease and its expiry, changed only by answers that acknowledged a change (and by
the expiry of leases, which :class:`Clock`, the daemon's wall clock, decides). Its ``problem`` method applies
CONTRACT.md's rules ("Holders", "Availability", the container workflow) to a list of entries a
container asks for, so the test can say what the daemon must answer.
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lightd.api import create_app
from lightd.bootstrap import Lightd
from lightd.config import load_or_create
from tests.conftest import HEADERS, write_test_config
from tests.fakes import FakeEngine, FakeFirewall

__all__ = [
    "CONTAINERS",
    "IPS",
    "OPERATOR",
    "Clock",
    "Lease",
    "PORTS",
    "PROTOCOLS",
    "Key",
    "Model",
    "Served",
    "key_of",
    "label",
    "lease_holder",
    "read_file",
]

Key = tuple[str, int, str]

# A small pool, so that conflicts, ambiguity (tcp and udp on one number) and exhaustion are
# frequent; wildcard and specific addresses of one family, and a second family that must not
# conflict with the first. Loopback and the wildcards pass require_local_ip on any host.
IPS = ("0.0.0.0", "127.0.0.1", "::")
PORTS = (20001, 20002, 20003, 20004)
PROTOCOLS = ("tcp", "udp")
CONTAINERS = ("mc-1", "mc-2", "mc-3")
# Most of the keys above exist from the start, so that most steps change something.
SEED = [
    {"ip": "0.0.0.0", "ports": "20001-20003", "protocol": "both"},
    {"ip": "127.0.0.1", "ports": "20001-20003", "protocol": "both"},
    {"ip": "::", "ports": "20001-20002", "protocol": "tcp"},
]
OPERATOR = "(operator)"  # the holder of an entry marked in use by PUT .../use or a claim
LEASE = "lease:"  # + the lease's id: the holder of an entry claimed with a ttl
START = 1_800_000_000.25  # the clock's first reading: a fraction, so expiries round up


def lease_holder(lease_id: str) -> str:
    return LEASE + lease_id


class Clock:
    """The daemon's wall clock (epoch seconds), moved only by the test; it outlives restarts."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "a wall clock the test moves back would be a test of something else"
        self.now += seconds


@dataclass
class Lease:
    """A lease as clients were told: its expiry (whole epoch seconds), its ttl and the clock's
    reading when it was claimed; the entries it holds are those whose holder is
    ``lease_holder(id)``."""

    expires_at: int
    ttl: int
    claimed: float

    @staticmethod
    def expiry(now: float, ttl: int) -> int:
        return math.ceil(now) + ttl


def family(ip: str) -> int:
    return 6 if ":" in ip else 4


def wildcard(ip: str) -> bool:
    return ip in ("0.0.0.0", "::")


def label(key: Key) -> str:
    ip, port, protocol = key
    return f"{f'[{ip}]' if ':' in ip else ip}:{port}/{protocol}"


def seed_keys() -> list[Key]:
    keys = []
    for item in SEED:
        first, last = (int(p) for p in str(item["ports"]).split("-"))
        protocols = PROTOCOLS if item["protocol"] == "both" else (str(item["protocol"]),)
        keys += [
            (str(item["ip"]), port, protocol) for protocol in protocols for port in range(first, last + 1)
        ]
    return keys


@dataclass
class Model:
    """What the daemon acknowledged: each entry's holder (None when free), each container's bindings."""

    holders: dict[Key, str | None] = field(default_factory=lambda: dict.fromkeys(seed_keys()))
    containers: dict[str, list[Key]] = field(default_factory=dict)
    # In the order they were claimed (and gone in the order they went), never sorted by id: ids
    # are random, and a pick by position among them must replay the same when hypothesis does.
    leases: dict[str, Lease] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)  # ids of leases that existed and no longer do

    def copy(self) -> Model:
        return Model(
            dict(self.holders),
            {k: list(v) for k, v in self.containers.items()},
            {k: Lease(v.expires_at, v.ttl, v.claimed) for k, v in self.leases.items()},
            list(self.gone),
        )

    def resolve(self, ip: str, port: int, protocol: str | None) -> Key | str:
        """The key a path names, or "missing" / "ambiguous" (CONTRACT.md: never guess)."""
        candidates = [protocol] if protocol else list(PROTOCOLS)
        found = [(ip, port, p) for p in candidates if (ip, port, p) in self.holders]
        if len(found) > 1:
            return "ambiguous"
        return found[0] if found else "missing"

    def blockers(self, key: Key, also_in_use: set[Key] | frozenset[Key] = frozenset()) -> list[Key]:
        """In-use entries that keep ``key`` from being bound: one of the two is a wildcard."""
        ip, port, protocol = key
        return [
            other
            for other, holder in self.holders.items()
            if other != key
            and other[1:] == (port, protocol)
            and family(other[0]) == family(ip)
            and (wildcard(other[0]) or wildcard(ip))
            and (holder is not None or other in also_in_use)
        ]

    def available(self, key: Key, also_in_use: set[Key] | frozenset[Key] = frozenset()) -> bool:
        return (
            key in self.holders
            and self.holders[key] is None
            and key not in also_in_use
            and not self.blockers(key, also_in_use)
        )

    def matching(self, ip: str | None, protocol: str | None) -> list[Key]:
        return [
            k for k in self.holders if (ip is None or k[0] == ip) and (protocol is None or k[2] == protocol)
        ]

    def problem(self, keys: list[Key], holder: str) -> str | None:
        """Why ``holder`` cannot take ``keys`` (in this order), or None.

        "missing", "taken", "blocked", "twice"; or "blocked_by_own" when the only blockers are
        entries ``holder`` has now and gives up with this change (a rebind may then go either way).
        A container takes an entry a lease holds (CONTRACT13: the lease was for that container).
        """
        own = {k for k, h in self.holders.items() if h == holder}
        taking: set[Key] = set()
        maybe = False
        for key in keys:
            if key not in self.holders:
                return "missing"
            if key in taking:
                return "twice"
            if self.holders[key] not in (None, holder) and not self.leased(key):
                return "taken"
            if self.holders[key] is None:
                blockers = self.blockers(key, taking)
                leaving = own - set(keys)
                if any(b not in leaving for b in blockers):
                    return "blocked"
                maybe = maybe or bool(blockers)
            taking.add(key)
        return "blocked_by_own" if maybe else None

    def take(self, holder: str, keys: list[Key]) -> None:
        """``holder`` (a container) now has exactly ``keys``; what it had before is freed."""
        for key in self.containers.get(holder, []):
            self.holders[key] = None
        for key in keys:
            self.holders[key] = holder
        self.containers[holder] = list(keys)
        self.prune()

    def drop(self, holder: str) -> None:
        for key in self.containers.pop(holder):
            self.holders[key] = None

    # -- leases ------------------------------------------------------------------------------

    def leased(self, key: Key) -> str | None:
        """The id of the lease holding ``key``, or None."""
        holder = self.holders.get(key)
        return holder.removeprefix(LEASE) if holder is not None and holder.startswith(LEASE) else None

    def lease_keys(self, lease_id: str) -> list[Key]:
        return sorted(k for k, h in self.holders.items() if h == lease_holder(lease_id))

    def end_lease(self, lease_id: str, to: str | None = None) -> list[Key]:
        """The lease is gone (released, expired: its entries free; kept: ``to`` the operator)."""
        keys = self.lease_keys(lease_id)
        for key in keys:
            self.holders[key] = to
        del self.leases[lease_id]
        self.gone.append(lease_id)
        return keys

    def lease_order(self, lease_id: str) -> tuple[int, str]:
        """How the daemon lists leases: by expiry, then id."""
        return (self.leases[lease_id].expires_at, lease_id)

    def due(self, now: float) -> list[str]:
        return [i for i, lease in self.leases.items() if lease.expires_at <= now]

    def prune(self) -> None:
        """A lease whose every entry a container took over is gone (CONTRACT13)."""
        for lease_id in [i for i in self.leases if not self.lease_keys(i)]:
            del self.leases[lease_id]
            self.gone.append(lease_id)


def key_of(item: dict[str, Any]) -> Key:
    return (str(item["ip"]), int(item["port"]), str(item["protocol"]))


def read_file(path: Path) -> tuple[list[tuple[Any, ...]], dict[str, dict[str, Any]]]:
    """The ports (with the lease holding each) and containers in the SQLite file, through a
    connection of our own."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        ports = sorted(db.execute("SELECT ip, port, protocol, in_use, container, note, lease FROM ports"))
        containers = {
            internal_id: json.loads(body)
            for internal_id, body in db.execute("SELECT internal_id, body FROM containers")
        }
    return ports, containers


class Served:
    """One daemon at a time on one data folder; the firewall and engine survive restarts."""

    def __init__(self, folder: Path, writer: str = "thread") -> None:
        # The thread writer commits to the same SQLite file as the process one, without starting
        # a child process at each of the many restarts.
        config = write_test_config(
            folder,
            pool={"initial_ports": SEED, "host_check": False, "require_local_ip": True},
            storage={"writer": writer},
        )
        self.settings = load_or_create(config)
        self.firewall = FakeFirewall()
        self.engine = FakeEngine()
        self.clock = Clock()
        self.lightd: Lightd | None = None
        self.http: httpx.AsyncClient | None = None
        self.starts = 0

    @property
    def database(self) -> Path:
        return self.settings.database_path

    async def start(self) -> None:
        lightd = Lightd(self.settings, firewall=self.firewall, engine=self.engine, clock=self.clock)
        # Its random choices seeded, so that hypothesis can replay and shrink a failing run.
        lightd.pool.rng = random.Random(self.starts)
        app = create_app(lightd)
        try:
            await lightd.start()
        except BaseException:
            await lightd.stop()
            raise
        self.lightd = lightd
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://lightd", headers=HEADERS
        )
        self.starts += 1

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.aclose()
            self.http = None
        if self.lightd is not None:
            lightd, self.lightd = self.lightd, None
            await lightd.stop()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def store_holder(self, key: Key, in_use: int, container: str | None) -> None:
        """Write one entry's holder straight into the file (only while the daemon is stopped)."""
        assert self.lightd is None, "the daemon is running"
        with closing(sqlite3.connect(self.database)) as db, db:
            db.execute(
                "UPDATE ports SET in_use = ?, container = ? WHERE ip = ? AND port = ? AND protocol = ?",
                (in_use, container, *key),
            )

    def faults(self) -> list[str]:
        """The injected failures that fired since the last call (and forget them)."""
        fired = [f"firewall.{m}" for m in self.firewall.failed] + [f"engine.{m}" for m in self.engine.failed]
        self.firewall.failed.clear()
        self.engine.failed.clear()
        return fired

    async def request(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> httpx.Response:
        assert self.http is not None, "the daemon is not running"
        return await self.http.request(method, path, json=body, params=params)
