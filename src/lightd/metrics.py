"""Prometheus metrics of one daemon: what it counts, and the text ``GET /metrics`` answers.

Each :class:`Metrics` has a ``CollectorRegistry`` of its own, never the global one: tests run
several daemons in one process, and a daemon exports its own figures only.

The counters and histograms are plain Python numbers, not ``prometheus_client``'s metric objects:
everything that counts runs on the event loop (handlers, the committer's callbacks, the scrape),
so no lock is needed, and the hot routes (``random``, ``claim``) pay an integer increment and a
``bisect`` instead of a lock per sample. One collector turns them into metric families at scrape
time; the pool's and the firewall's gauges are read then too, from the pool itself (so nothing is
kept in step with each change of it).

Services call the recording methods (``claimed``, ``committed``, ``repair_findings``...);
:meth:`Metrics.disabled` gives an object whose methods do nothing (``metrics.enabled: false``,
and unit tests).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from lightd.core.pool import Pool
from lightd.errors import NoAvailablePorts, StorageError
from lightd.service.repair_rules import FINDING_TYPES

__all__ = [
    "CLAIM_ERROR_REASONS",
    "CONTENT_TYPE",
    "METHODS",
    "REPAIR_TYPES",
    "UNMATCHED",
    "Histogram",
    "Metrics",
    "RouteStats",
    "claim_error_reason",
    "pool_counts",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CHANGES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 20000, 100000)
REPAIR_TYPES = FINDING_TYPES  # the repair loop's finding types, one list for both
# Claims the pool could not meet or save; a claim refused for its body is a 400 of
# lightd_http_requests_total and never reaches the pool.
CLAIM_ERROR_REASONS = ("no_available_ports", "storage", "other")
# Every label value comes from a fixed set, so no client can grow the number of series: a
# method lightd does not serve is "other", a path no route matches is "unmatched".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


class Histogram:
    """Counts per bucket (``value <= bound``, the last one +Inf) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative, as the exposition format wants them."""
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out


class RouteStats:
    """One route template of one method: the durations of its requests, one histogram per status.

    A request is one observation; ``lightd_http_requests_total{status}`` is the count of its
    status's histogram and the route's duration histogram their sum, both made at scrape time.
    The fast path holds the 200 histogram of each hot route from the start (pre-bound), so a
    request there costs a bucket search and two additions, no lookup.
    """

    __slots__ = ("by_status",)

    def __init__(self) -> None:
        self.by_status: dict[int, Histogram] = {}

    def status(self, status: int) -> Histogram:
        histogram = self.by_status.get(status)
        if histogram is None:
            histogram = self.by_status[status] = Histogram(SECONDS)
        return histogram

    def done(self, status: int, seconds: float) -> None:
        self.status(status).observe(seconds)

    def duration(self) -> tuple[list[tuple[str, float]], float]:
        """The buckets and sum of every status together."""
        total = Histogram(SECONDS)
        for histogram in self.by_status.values():
            total.counts = [a + b for a, b in zip(total.counts, histogram.counts, strict=True)]
            total.sum += histogram.sum
        return total.buckets(), total.sum


def claim_error_reason(exc: BaseException) -> str:
    """The ``reason`` label of a failed claim (one of CLAIM_ERROR_REASONS)."""
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "other"


_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (NoAvailablePorts, "no_available_ports"),
    (StorageError, "storage"),
)


def pool_counts(pool: Pool) -> dict[str, tuple[int, int, int]]:
    """Per protocol: entries not in use, in use, and available (free and not blocked by a
    wildcard sibling). O(entries) for the first two (~10 ms for 131,070): read at scrape time
    only, so that no change of the pool pays for keeping them."""
    in_use = {"tcp": 0, "udp": 0}
    total = {"tcp": 0, "udp": 0}
    for entry in pool.unsorted():
        total[entry.protocol] += 1
        if entry.in_use:
            in_use[entry.protocol] += 1
    return {
        protocol: (total[protocol] - in_use[protocol], in_use[protocol], pool.available_count(protocol))
        for protocol in ("tcp", "udp")
    }


class Metrics:
    """The figures of one daemon; see the module docstring."""

    enabled = True

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.claims = 0
        self.claimed_ports = 0
        self.claim_errors = dict.fromkeys(CLAIM_ERROR_REASONS, 0)
        self.commit_seconds = Histogram(SECONDS)
        self.commit_changes = Histogram(CHANGES)
        self.commit_errors = 0
        self.routes: dict[tuple[str, str], RouteStats] = {}
        self.findings = dict.fromkeys(REPAIR_TYPES, 0)
        self.reserved = 0
        self.expired_leases = 0
        self._pool: Callable[[], Pool] | None = None
        self._live: Callable[[], Mapping[str, int]] | None = None
        self._firewall: Callable[[], Mapping[str, Any]] | None = None
        if not self.enabled:  # exports nothing: no collector (the process one reads /proc)
            return
        self.registry.register(_Collector(self))
        # The daemon's CPU time, memory, open files and start time (process_*), from /proc.
        ProcessCollector(registry=self.registry)

    @classmethod
    def disabled(cls) -> Metrics:
        """A Metrics whose recording methods do nothing and whose exposition is empty."""
        return _Disabled()

    # -- sources read at scrape time ---------------------------------------------------------

    def watch_pool(self, pool: Callable[[], Pool]) -> None:
        """Where the pool gauges come from: a callable, since the pool is rebuilt on reload."""
        self._pool = pool

    def watch_firewall(self, status: Callable[[], Mapping[str, Any]]) -> None:
        """The firewall's ``status()``; its ``rules`` (``{"ipv4": n, ...}``) feed the gauge."""
        self._firewall = status

    def watch_live(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """``leases`` held now, stream ``subscribers`` now, and ``events`` told since start."""
        self._live = counts

    # -- recording ---------------------------------------------------------------------------

    def leases_expired(self, count: int) -> None:
        self.expired_leases += count

    def route(self, method: str, route: str) -> RouteStats:
        """The stats of ``method`` on a route template (made on first use; a bounded set)."""
        key = (method if method in METHODS else "other", route)
        stats = self.routes.get(key)
        if stats is None:
            stats = self.routes[key] = RouteStats()
        return stats

    def claimed(self, ports: int) -> None:
        """A claim was saved; ``ports`` entries were taken (two per number for tcp+udp)."""
        self.claims += 1
        self.claimed_ports += ports

    def claim_failed(self, reason: str) -> None:
        """A claim was refused or failed; ``reason`` one of CLAIM_ERROR_REASONS."""
        key = reason if reason in self.claim_errors else "other"
        self.claim_errors[key] += 1

    def committed(self, seconds: float, changes: int) -> None:
        """A transaction of ``changes`` changes became durable after ``seconds``."""
        self.commit_seconds.observe(seconds)
        self.commit_changes.observe(changes)

    def commit_failed(self) -> None:
        self.commit_errors += 1

    def repair_findings(self, counts: Mapping[str, int]) -> None:
        """After each repair pass: its findings by type; types not named are set to 0."""
        self.findings = dict.fromkeys(REPAIR_TYPES, 0)
        for kind, count in counts.items():
            self.findings[kind] = count

    def reserved_ports(self, count: int) -> None:
        """How many pool ports are in ``net.ipv4.ip_local_reserved_ports`` now."""
        self.reserved = count

    # -- exposition --------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric (content type :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    def families(self) -> Iterator[Metric]:
        claims = CounterMetricFamily("lightd_claims", "Claims saved (each of one or more ports).")
        claims.add_metric([], self.claims)
        yield claims
        ports = CounterMetricFamily(
            "lightd_claimed_ports", "Pool entries taken by saved claims (tcp+udp counts two)."
        )
        ports.add_metric([], self.claimed_ports)
        yield ports
        errors = CounterMetricFamily(
            "lightd_claim_errors", "Claims that took nothing, by reason.", labels=["reason"]
        )
        for reason, count in self.claim_errors.items():
            errors.add_metric([reason], count)
        yield errors
        yield _histogram(
            "lightd_store_commit_seconds",
            "Time from handing a transaction to the store's writer until it was durable.",
            self.commit_seconds,
        )
        yield _histogram(
            "lightd_store_commit_changes", "Changes per durable transaction.", self.commit_changes
        )
        commit_errors = CounterMetricFamily(
            "lightd_store_commit_errors", "Transactions that failed or were not confirmed in time."
        )
        commit_errors.add_metric([], self.commit_errors)
        yield commit_errors
        yield from self._http_families()
        yield from self._pool_families()
        yield from self._firewall_families()
        findings = GaugeMetricFamily(
            "lightd_repair_findings", "Findings of the last repair pass, by type.", labels=["type"]
        )
        for kind, count in sorted(self.findings.items()):
            findings.add_metric([kind], count)
        yield findings
        reserved = GaugeMetricFamily(
            "lightd_reserved_ports", "Pool ports kept in net.ipv4.ip_local_reserved_ports."
        )
        reserved.add_metric([], self.reserved)
        yield reserved
        yield from self._live_families()

    def _live_families(self) -> Iterator[Metric]:
        expired = CounterMetricFamily("lightd_leases_expired", "Leases freed because they ran out.")
        expired.add_metric([], self.expired_leases)
        yield expired
        live = {} if self._live is None else self._live()
        for name, kind, documentation in (
            ("leases", GaugeMetricFamily, "Leases holding ports now."),
            ("event_subscribers", GaugeMetricFamily, "Clients following GET /network/events now."),
            ("events", CounterMetricFamily, "Events told on the stream since the daemon started."),
        ):
            family = kind(f"lightd_{name}", documentation)
            family.add_metric([], live.get(name, 0))
            yield family

    def _http_families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "lightd_http_requests",
            "HTTP requests answered, by method, route template and status.",
            labels=["method", "route", "status"],
        )
        durations = HistogramMetricFamily(
            "lightd_http_request_duration_seconds",
            "Time from a request's arrival until its answer was sent, by method and route template.",
            labels=["method", "route"],
        )
        for (method, route), stats in sorted(self.routes.items()):
            if not stats.by_status:
                continue  # a hot route bound at start that nobody asked for yet
            for status, histogram in sorted(stats.by_status.items()):
                requests.add_metric([method, route, str(status)], sum(histogram.counts))
            durations.add_metric([method, route], *stats.duration())
        yield requests
        yield durations

    def _pool_families(self) -> Iterator[Metric]:
        if self._pool is None:
            return
        counts = pool_counts(self._pool())
        ports = GaugeMetricFamily(
            "lightd_pool_ports",
            "Pool entries by protocol and state (free: not in use).",
            labels=["protocol", "state"],
        )
        available = GaugeMetricFamily(
            "lightd_pool_available_ports",
            "Pool entries a claim could take now (free, and no wildcard sibling in use).",
            labels=["protocol"],
        )
        for protocol, (free, in_use, can_take) in counts.items():
            ports.add_metric([protocol, "free"], free)
            ports.add_metric([protocol, "in_use"], in_use)
            available.add_metric([protocol], can_take)
        yield ports
        yield available

    def _firewall_families(self) -> Iterator[Metric]:
        rules = GaugeMetricFamily(
            "lightd_firewall_rules",
            "lightd's rules in its firewall chain, by address family (none while the firewall is off).",
            labels=["family"],
        )
        status = {} if self._firewall is None else self._firewall()
        for family, count in sorted((status.get("rules") or {}).items()):
            rules.add_metric([str(family)], count)
        yield rules


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], histogram.buckets(), histogram.sum)
    return family


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.families()


class _Disabled(Metrics):
    """``metrics.enabled: false``: records nothing; the middleware skips timing altogether."""

    enabled = False

    def claimed(self, ports: int) -> None:
        return None

    def claim_failed(self, reason: str) -> None:
        return None

    def committed(self, seconds: float, changes: int) -> None:
        return None

    def commit_failed(self) -> None:
        return None

    def repair_findings(self, counts: Mapping[str, int]) -> None:
        return None

    def reserved_ports(self, count: int) -> None:
        return None

    def exposition(self) -> bytes:
        return b""
