import random
from collections import Counter

import pytest

from lightd.core.entry import Entry
from lightd.core.pool import Pool
from lightd.errors import AlreadyExists, Ambiguous, PortNotFound


def pool_of(*specs):
    return Pool(Entry(ip, port, proto) for ip, port, proto in specs)


def test_same_ip_port_may_exist_once_per_protocol():
    pool = pool_of(("0.0.0.0", 25565, "tcp"), ("0.0.0.0", 25565, "udp"))
    assert len(pool) == 2
    with pytest.raises(AlreadyExists):
        pool.add(Entry("0.0.0.0", 25565, "tcp"))


def test_resolve_without_protocol_refuses_to_guess_between_tcp_and_udp():
    pool = pool_of(("0.0.0.0", 25565, "tcp"), ("0.0.0.0", 25565, "udp"), ("0.0.0.0", 19132, "udp"))
    with pytest.raises(Ambiguous, match="both tcp and udp"):
        pool.resolve("0.0.0.0", 25565, None)
    assert pool.resolve("0.0.0.0", 25565, "udp").protocol == "udp"
    assert pool.resolve("0.0.0.0", 19132, None).protocol == "udp"
    with pytest.raises(PortNotFound):
        pool.resolve("0.0.0.0", 19132, "tcp")


def test_entries_are_sorted_by_ip_numerically_then_port_then_protocol():
    pool = pool_of(
        ("10.0.0.10", 1, "tcp"), ("10.0.0.9", 2, "udp"), ("::", 1, "tcp"),
        ("10.0.0.9", 2, "tcp"), ("0.0.0.0", 9, "tcp"),
    )
    assert [e.key for e in pool.entries()] == [
        ("0.0.0.0", 9, "tcp"), ("10.0.0.9", 2, "tcp"), ("10.0.0.9", 2, "udp"),
        ("10.0.0.10", 1, "tcp"), ("::", 1, "tcp"),
    ]


def test_in_use_entry_is_not_available_and_freeing_restores_it():
    pool = pool_of(("0.0.0.0", 25565, "tcp"))
    entry = pool.get(("0.0.0.0", 25565, "tcp"))
    assert pool.set_in_use(entry, True)
    assert not pool.set_in_use(entry, True), "a second mark changes nothing"
    assert pool.random(random.Random(1)) is None
    pool.set_in_use(entry, False)
    assert pool.random(random.Random(1)) is entry


def test_wildcard_in_use_blocks_specific_ips_of_same_family_port_and_protocol_only():
    pool = pool_of(
        ("0.0.0.0", 25565, "tcp"), ("10.0.0.5", 25565, "tcp"), ("10.0.0.5", 25565, "udp"),
        ("10.0.0.5", 25566, "tcp"), ("::1", 25565, "tcp"),
    )
    pool.set_in_use(pool.get(("0.0.0.0", 25565, "tcp")), True)
    available = {e.key for e in pool.entries() if pool.is_available(e)}
    assert available == {("10.0.0.5", 25565, "udp"), ("10.0.0.5", 25566, "tcp"), ("::1", 25565, "tcp")}
    assert [b.key for b in pool.blockers(pool.get(("10.0.0.5", 25565, "tcp")))] == [
        ("0.0.0.0", 25565, "tcp")
    ]


def test_specific_ip_in_use_blocks_the_wildcard():
    pool = pool_of(("0.0.0.0", 25565, "tcp"), ("10.0.0.5", 25565, "tcp"), ("10.0.0.6", 25565, "tcp"))
    pool.set_in_use(pool.get(("10.0.0.5", 25565, "tcp")), True)
    assert not pool.is_available(pool.get(("0.0.0.0", 25565, "tcp")))
    assert pool.is_available(pool.get(("10.0.0.6", 25565, "tcp"))), "two specific ips coexist"


def test_ipv6_wildcard_blocks_ipv6_only():
    pool = pool_of(("::", 80, "tcp"), ("2001:db8::1", 80, "tcp"), ("10.0.0.5", 80, "tcp"))
    pool.set_in_use(pool.get(("::", 80, "tcp")), True)
    assert not pool.is_available(pool.get(("2001:db8::1", 80, "tcp")))
    assert pool.is_available(pool.get(("10.0.0.5", 80, "tcp")))


def test_removing_an_in_use_wildcard_unblocks_the_specific_ips():
    pool = pool_of(("0.0.0.0", 25565, "tcp"), ("10.0.0.5", 25565, "tcp"))
    pool.set_in_use(pool.get(("0.0.0.0", 25565, "tcp")), True)
    pool.remove(("0.0.0.0", 25565, "tcp"))
    assert pool.is_available(pool.get(("10.0.0.5", 25565, "tcp")))


def test_adding_a_wildcard_next_to_a_used_specific_ip_makes_it_unavailable_at_once():
    pool = pool_of(("10.0.0.5", 25565, "tcp"))
    pool.set_in_use(pool.get(("10.0.0.5", 25565, "tcp")), True)
    pool.add(Entry("0.0.0.0", 25565, "tcp"))
    assert pool.random(random.Random(0)) is None


def test_random_only_returns_available_entries_and_filters_by_ip_and_protocol():
    pool = pool_of(
        *[("0.0.0.0", p, "tcp") for p in range(1000, 1010)],
        *[("0.0.0.0", p, "udp") for p in range(1000, 1010)],
        ("127.0.0.1", 2000, "tcp"),
    )
    for port in range(1000, 1009):
        pool.set_in_use(pool.get(("0.0.0.0", port, "tcp")), True)
    rng = random.Random(7)
    seen = {pool.random(rng, protocol="tcp").key for _ in range(200)}
    assert seen == {("0.0.0.0", 1009, "tcp"), ("127.0.0.1", 2000, "tcp")}
    assert {pool.random(rng, ip="127.0.0.1").key for _ in range(20)} == {("127.0.0.1", 2000, "tcp")}
    assert pool.random(rng, ip="10.9.9.9") is None


def test_random_is_roughly_uniform_across_groups():
    pool = pool_of(*[("0.0.0.0", p, "tcp") for p in range(1, 101)], ("127.0.0.1", 5, "udp"))
    counts = Counter(pool.random(random.Random(i)).ip for i in range(5000))
    # 1 in 101 entries is on 127.0.0.1: a group-first draw would give it half.
    assert counts["127.0.0.1"] < 150


def test_random_never_returns_a_rejected_entry():
    pool = pool_of(*[("0.0.0.0", p, "tcp") for p in range(1, 50)])
    for seed in range(30):
        assert pool.random(random.Random(seed), reject=lambda e: e.port != 49).port == 49
    assert pool.random(random.Random(0), reject=lambda e: True) is None


def test_remove_unknown_entry_raises_not_found():
    with pytest.raises(PortNotFound):
        Pool().remove(("0.0.0.0", 1, "tcp"))


def test_available_count_tracks_every_change():
    pool = pool_of(*[("0.0.0.0", p, "tcp") for p in range(1, 11)], ("10.0.0.1", 1, "tcp"))
    assert pool.available_count() == 11
    pool.set_in_use(pool.get(("0.0.0.0", 1, "tcp")), True)
    assert pool.available_count() == 9  # the wildcard and the blocked 10.0.0.1
    pool.remove(("0.0.0.0", 2, "tcp"))
    assert pool.available_count() == 8


def test_every_draw_index_agrees_with_the_entries_as_groups_come_and_go():
    """Random changes, with new ips and protocols appearing late: every draw (unfiltered, per
    protocol, per ip) can return exactly the entries the availability rules allow, no more."""
    rng = random.Random(11)
    pool = pool_of(*[("0.0.0.0", p, "tcp") for p in range(1, 30)])
    ips = ["0.0.0.0", "10.0.0.1", "127.0.0.1", "::", "::1"]
    for step in range(600):
        ip, port, protocol = rng.choice(ips), rng.randint(1, 30), rng.choice(("tcp", "udp"))
        entry = pool.get((ip, port, protocol))
        if entry is None:
            pool.add(Entry(ip, port, protocol))
        elif step % 7 == 0 and not entry.in_use:
            pool.remove(entry.key)
        else:
            pool.set_in_use(entry, not entry.in_use)
        if step % 50 == 0 or step == 599:
            expected = {e.key for e in pool.entries() if pool.is_available(e)}
            assert expected == {e.key for e in pool.entries()
                                if not e.in_use and not pool.blockers(e)}
            assert pool.available_count() == len(expected)
            for protocol_filter in (None, "tcp", "udp"):
                wanted = {k for k in expected if protocol_filter in (None, k[2])}
                drawn = set()
                for _ in range(40 * len(wanted) + 1):
                    chosen = pool.random(rng, protocol=protocol_filter)
                    drawn.add(None if chosen is None else chosen.key)
                assert drawn == (wanted or {None})
