"""lightd.metrics on its own: buckets, bounded labels, one registry per daemon, the off switch."""

from prometheus_client.parser import text_string_to_metric_families

from lightd.core import holders
from lightd.core.entry import Entry
from lightd.core.pool import Pool
from lightd.errors import NoAvailablePorts, NotFound, StorageError
from lightd.metrics import Histogram, Metrics, claim_error_reason, pool_counts


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_histogram_buckets_are_cumulative_and_bounds_inclusive():
    histogram = Histogram((1, 5))
    for value in (0.5, 1, 3, 5, 7):
        histogram.observe(value)
    assert histogram.buckets() == [("1.0", 2), ("5.0", 4), ("+Inf", 5)]
    assert histogram.sum == 16.5


def test_each_metrics_has_its_own_registry():
    one, other = Metrics(), Metrics()
    one.claimed(3)
    one.committed(0.002, 3)
    assert samples(one)[("lightd_claimed_ports_total", ())] == 3
    assert samples(one)[("lightd_store_commit_seconds_bucket", (("le", "0.0025"),))] == 1
    assert samples(other)[("lightd_claimed_ports_total", ())] == 0
    assert samples(other)[("lightd_store_commit_seconds_count", ())] == 0


def test_label_values_come_from_fixed_sets():
    metrics = Metrics()
    metrics.route("BREW", "/network/ports").done(405, 0.001)
    metrics.route("GET", "/network/ports").done(200, 0.001)
    metrics.claim_failed("made up")
    found = samples(metrics)
    labels = (("method", "other"), ("route", "/network/ports"), ("status", "405"))
    assert found[("lightd_http_requests_total", labels)] == 1
    assert found[("lightd_claim_errors_total", (("reason", "other"),))] == 1
    assert not any(dict(labels).get("method") == "BREW" for _, labels in found)
    assert claim_error_reason(NoAvailablePorts()) == "no_available_ports"
    assert claim_error_reason(StorageError("disk")) == "storage"
    assert claim_error_reason(NotFound("x")) == "other"


def test_repair_findings_and_reserved_ports_are_set_not_added():
    metrics = Metrics()
    metrics.repair_findings({"squatter": 2, "idle": 1})
    metrics.repair_findings({"orphan": 4})
    metrics.reserved_ports(7)
    metrics.reserved_ports(5)
    found = samples(metrics)
    findings = {
        dict(labels)["type"]: v for (name, labels), v in found.items() if name == "lightd_repair_findings"
    }
    assert findings == {"squatter": 0, "orphan": 4, "idle": 0, "firewall_drift": 0}
    assert found[("lightd_reserved_ports", ())] == 5


def test_pool_gauges_tell_free_from_available():
    # A specific ip in use blocks the wildcard of its port: free (not in use), yet not available.
    pool = Pool(
        [Entry("0.0.0.0", 5000, "tcp"), Entry("127.0.0.1", 5000, "tcp"), Entry("127.0.0.1", 5001, "udp")]
    )
    holders.take(pool, pool.resolve("127.0.0.1", 5000, "tcp"), holders.OPERATOR)
    assert pool_counts(pool) == {"tcp": (1, 1, 0), "udp": (1, 0, 1)}
    metrics = Metrics()
    metrics.watch_pool(lambda: pool)
    metrics.watch_firewall(lambda: {"enabled": True, "rules": {"ipv4": 3, "ipv6": 0}})
    found = samples(metrics)
    assert found[("lightd_pool_ports", (("protocol", "tcp"), ("state", "free")))] == 1
    assert found[("lightd_pool_ports", (("protocol", "tcp"), ("state", "in_use")))] == 1
    assert found[("lightd_pool_available_ports", (("protocol", "tcp"),))] == 0
    assert found[("lightd_firewall_rules", (("family", "ipv4"),))] == 3
    assert found[("lightd_firewall_rules", (("family", "ipv6"),))] == 0


def test_disabled_records_nothing():
    metrics = Metrics.disabled()
    assert not metrics.enabled
    metrics.claimed(1)
    metrics.claim_failed("storage")
    metrics.committed(0.1, 1)
    metrics.commit_failed()
    metrics.repair_findings({"squatter": 1})
    metrics.reserved_ports(3)
    assert metrics.exposition() == b""
    assert (metrics.claims, metrics.claimed_ports, metrics.commit_errors, metrics.reserved) == (0, 0, 0, 0)
    assert metrics.findings["squatter"] == 0
