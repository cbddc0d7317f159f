"""The firewall end to end: `lightd serve` over HTTP, its iptables rules in a private namespace.

The daemon listens on loopback in the host's namespace and runs every iptables command in a
throw-away network namespace (``firewall.netns``), so these tests never touch the host's firewall.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import HEADERS, write_test_config
from tests.e2e.daemon import ServedDaemon
from tests.netns import NetNs

pytestmark = pytest.mark.slow

TAG = "-m comment --comment lightd -j ACCEPT"


@pytest.fixture
def served(tmp_path, ns) -> Iterator[ServedDaemon]:
    config = write_test_config(tmp_path, firewall={"enabled": True, "netns": ns.path})
    daemon = ServedDaemon(config)
    daemon.start()
    yield daemon
    daemon.stop()


def call(served, method, path, **kwargs) -> httpx.Response:
    return httpx.request(method, served.url + path, headers=HEADERS, timeout=60, **kwargs)


def ports_open(ns: NetNs, family: int = 4) -> list[str]:
    """lightd's rules, reduced to 'ip port/protocol' (ip '*' for a wildcard)."""
    found = []
    for line in ns.rules("LIGHTD", family):
        assert line.endswith(TAG), line
        words = line.split()
        ip = words[words.index("-d") + 1].split("/")[0] if "-d" in words else "*"
        found.append(f"{ip} {words[words.index('--dport') + 1]}/{words[words.index('-p') + 1]}")
    return sorted(found)


def test_rules_follow_the_pool_through_add_delete_bulk_and_restart(served, ns):
    defaults = sorted(f"* {p}/tcp" for p in range(25565, 25570))
    assert ports_open(ns) == defaults, "start-up reconciles the initial pool"
    assert ns.save(4).count("-A INPUT -j LIGHTD") == 1

    assert call(served, "POST", "/network/ports",
                json={"ip": "127.0.0.1", "port": 30000, "protocol": "udp"}).status_code == 201
    assert call(served, "POST", "/network/ports",
                json={"ip": "::", "port": 19132, "protocol": "udp"}).status_code == 201
    assert "127.0.0.1 30000/udp" in ports_open(ns)
    assert ports_open(ns, 6) == ["* 19132/udp"], "IPv6 entries go through ip6tables, no -d for ::"

    bulk = call(served, "POST", "/network/ports/bulk",
                json={"ip": "0.0.0.0", "protocol": "tcp", "ports": ["40000-40999"]})
    assert bulk.status_code == 201
    assert len(ports_open(ns)) == 5 + 1 + 1000
    deleted = call(served, "POST", "/network/ports/bulk-delete",
                   json={"ports": [{"ip": "0.0.0.0", "port": p} for p in range(40000, 40500)]})
    assert deleted.json()["deleted_count"] == 500
    assert call(served, "DELETE", "/network/ports/0.0.0.0/25565").status_code == 200
    expected = sorted([*defaults[1:], "127.0.0.1 30000/udp",
                       *(f"* {p}/tcp" for p in range(40500, 41000))])
    assert ports_open(ns) == expected

    # An operator deletes one rule and duplicates another by hand; reconcile repairs both.
    ns.run("iptables", "-D", "LIGHTD", "-p", "tcp", "-m", "tcp", "--dport", "25566",
           "-m", "comment", "--comment", "lightd", "-j", "ACCEPT")
    ns.run("iptables", "-A", "LIGHTD", "-p", "tcp", "-m", "tcp", "--dport", "25567",
           "-m", "comment", "--comment", "lightd", "-j", "ACCEPT")
    ns.run("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")  # not ours
    repaired = call(served, "POST", "/network/firewall/reconcile")
    assert repaired.status_code == 200
    assert (repaired.json()["added"], repaired.json()["removed"]) == (1, 1)
    assert ports_open(ns) == expected
    assert "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT" in ns.save(4)

    status = call(served, "GET", "/network/firewall").json()
    assert status["enabled"] is True and status["rule_count"] == len(expected) + 1

    served.stop()
    served.start()
    assert ports_open(ns) == expected, "a restart leaves exactly one rule per entry"
    assert ports_open(ns, 6) == ["* 19132/udp"]
    assert ns.save(4).count("-A INPUT -j LIGHTD") == 1


def test_when_the_firewall_fails_the_pool_is_unchanged(served, ns):
    ns.close()  # the namespace is gone: every iptables command now fails
    added = call(served, "POST", "/network/ports", json={"ip": "0.0.0.0", "port": 31000})
    assert added.status_code == 503
    assert added.json()["error"]
    assert call(served, "GET", "/network/ports/0.0.0.0/31000").status_code == 404
    gone = call(served, "DELETE", "/network/ports/0.0.0.0/25565")
    assert gone.status_code == 503
    assert call(served, "GET", "/network/ports/0.0.0.0/25565").status_code == 200
    bulk = call(served, "POST", "/network/ports/bulk", json={"ip": "0.0.0.0", "ports": ["50-60"]})
    assert bulk.status_code == 503
    assert call(served, "GET", "/network/ports?limit=1").json()["total"] == 5


def test_firewall_enabled_true_refuses_to_start_when_it_cannot_work(tmp_path):
    config = write_test_config(
        tmp_path, firewall={"enabled": True, "netns": "/proc/999999999/ns/net"})
    daemon = ServedDaemon(config)
    with pytest.raises(RuntimeError, match="lightd exited"):
        daemon.start(timeout=20)
    assert "firewall" in daemon.tail()
