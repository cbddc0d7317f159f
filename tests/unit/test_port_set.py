"""Port sets and the kernel's ranges text (lightd.adapters.port_set): pure, no kernel involved."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightd.adapters.port_set import EMPTY, PORTS, PortSet, plan

numbers = st.integers(0, PORTS - 1)
# Sets of up to 65,536 numbers, compared with Python sets of as many: too slow for hypothesis'
# deadline on a shared machine, and what is drawn, not how fast, is the point here.
roomy = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def port_sets(draw: st.DrawFn) -> PortSet:
    """Sets of every shape: none, a few ranges, many single numbers, and both at once."""
    runs = draw(st.lists(st.tuples(numbers, st.integers(0, 3000)), max_size=20))
    singles = draw(st.lists(numbers, max_size=300))
    return PortSet.of_runs([(low, min(low + length, PORTS - 1)) for low, length in runs]) | PortSet.of(
        singles
    )


def members(ports: PortSet) -> set[int]:
    """The numbers, read off the integer's binary digits (not through the code under test)."""
    return {port for port, digit in enumerate(reversed(bin(ports.bits)[2:])) if digit == "1"}


def test_the_kernels_spelling_is_read_and_written_as_it_prints_it():
    listed = PortSet.parse("1,8080,9000-9005\n")
    assert members(listed) == {1, 8080, *range(9000, 9006)}
    assert listed.text() == "1,8080,9000-9005"
    assert PortSet.parse("\n") == EMPTY and EMPTY.text() == "" and len(EMPTY) == 0
    assert PortSet.parse("0-65535").text() == "0-65535" and len(PortSet.parse("0-65535")) == PORTS
    # Runs that touch or overlap are one range, whatever order they came in.
    assert PortSet.parse("9003-9005,9000-9002,9004").text() == "9000-9005"


@pytest.mark.parametrize("text", ["abc", "5-3", "65536", "1,,2", " 80", "80 ", "-5", "1-2-3", "８０"])
def test_what_is_not_a_list_of_ports_is_refused(text):
    with pytest.raises(ValueError):
        PortSet.parse(text)


@roomy
@given(port_sets())
def test_text_round_trips_and_names_each_run_once(ports):
    text = ports.text()
    assert PortSet.parse(text) == ports
    runs = ports.runs()
    assert all(low <= high for low, high in runs)
    # Runs are in order with a gap between any two: the shortest list the kernel can take.
    assert all(high + 1 < low for (_, high), (low, _) in zip(runs, runs[1:], strict=False))
    assert len(ports) == sum(high - low + 1 for low, high in runs)


@settings(roomy, max_examples=50)
@given(port_sets())
def test_flags_of_any_shape_make_the_same_set(ports):
    flags = bytearray(PORTS)
    for low, high in ports.runs():
        flags[low : high + 1] = b"\x01" * (high - low + 1)
    assert PortSet.of_flags(flags) == ports
    assert members(PortSet.of_flags(flags)) == {i for i, flag in enumerate(flags) if flag}


def test_flags_past_the_few_runs_path_and_at_both_ends():
    every_other = bytearray(PORTS)
    every_other[1::2] = b"\x01" * (PORTS // 2)  # 32,768 runs: the digit path
    assert PortSet.of_flags(every_other) == PortSet.of(range(1, PORTS, 2))
    ends = bytearray(PORTS)
    ends[0] = ends[PORTS - 1] = 1
    assert PortSet.of_flags(ends).text() == "0,65535"
    with pytest.raises(ValueError):
        PortSet.of_flags(bytes(100))


@roomy
@given(port_sets(), port_sets())
def test_set_algebra_matches_python_sets(a, b):
    assert members(a | b) == members(a) | members(b)
    assert members(a - b) == members(a) - members(b)
    assert members(a & b) == members(a) & members(b)
    assert (a <= b) == (members(a) <= members(b))


@roomy
@given(port_sets(), port_sets())
def test_merging_then_removing_ours_gives_back_the_others_exactly(others, wanted):
    target, mine = plan(others, EMPTY, wanted)
    assert target == others | wanted, "every pool number is listed, and every number of others"
    assert not mine & others, "a number somebody else listed stays theirs"
    assert wanted <= mine | others
    back, left = plan(target, mine, EMPTY)
    assert back == others and left == EMPTY


@roomy
@given(port_sets(), st.lists(port_sets(), min_size=1, max_size=5))
def test_any_sequence_of_pools_ends_with_the_others_exactly(others, pools):
    """Pools change again and again (adds, deletes); lightd owns only what it added itself."""
    current, ours = others, EMPTY
    for wanted in pools:
        current, ours = plan(current, ours, wanted)
        assert current == others | wanted
        assert ours == wanted - others
    current, ours = plan(current, ours, EMPTY)
    assert current == others and ours == EMPTY


@roomy
@given(port_sets(), port_sets(), port_sets())
def test_numbers_somebody_else_lists_while_lightd_runs_are_kept(others, wanted, later):
    """Another program rewrites the list while lightd runs, adding numbers of its own to it.
    They stay when lightd's go; only a number lightd had listed first is taken as lightd's
    (nothing in the list says who wrote a number), and goes with lightd's."""
    current, ours = plan(others, EMPTY, wanted)
    first = ours
    current, ours = plan(current | later, ours, EMPTY)
    assert current == others | (later - first)
    assert ours == EMPTY
