"""The one rule for a number written as text (path, query, range), and the short error quotes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from lightd.config import parse
from lightd.core.entry import parse_bounded, parse_ip, parse_port_text
from lightd.core.ranges import parse_port_spec, parse_protocols
from lightd.errors import InvalidInput, quoted

# Texts near the rule's edges: digits of every script, signs, spaces, zeros, and very long runs.
NEAR_DIGITS = st.text(
    alphabet=st.one_of(
        st.sampled_from("0123456789+- _.\t\n"),
        st.characters(categories=["Nd", "No", "Zs"]),
    ),
    max_size=8,
)
TEXTS = st.one_of(
    NEAR_DIGITS,
    st.text(max_size=12),
    st.integers(-(10**6), 10**6).map(str),
    st.integers(1, 65535).map(lambda n: "0" * 2 + str(n)),
    st.integers(4200, 6000).map(lambda n: "9" * n),
)


def canonical_port(text: str) -> bool:
    """The rule as a sentence: the text is exactly how Python writes a number from 1 to 65535."""
    if not (0 < len(text) <= 5 and text.isascii() and text.isdigit()):
        return False
    return str(int(text)) == text and 1 <= int(text) <= 65535


@given(st.integers(1, 65535))
def test_every_port_written_plainly_reads_back(port):
    assert parse_port_text(str(port)) == port


@given(TEXTS)
@example("+25565")
@example(" 25565")
@example("025565")
@example("２５５６５")
@example("٢٥٥٦٥")
@example("9" * 5000)
def test_a_port_text_is_accepted_exactly_when_it_is_the_plain_number(text):
    if canonical_port(text):
        assert parse_port_text(text) == int(text)
    else:
        with pytest.raises(InvalidInput, match="^port must be an integer from 1 to 65535") as info:
            parse_port_text(text)
        assert len(str(info.value)) < 250


@given(TEXTS, st.integers(0, 10), st.integers(10, 10**9))
def test_a_bounded_number_follows_the_same_rule(text, low, high):
    plain = text == "0" or (text.isascii() and text.isdigit() and not text.startswith("0"))
    if plain and len(text) <= len(str(high)) and low <= int(text) <= high:
        assert parse_bounded(text, "limit", low, high) == int(text)
    else:
        with pytest.raises(InvalidInput, match=f"^limit must be an integer from {low} to {high}"):
            parse_bounded(text, "limit", low, high)


@given(st.integers(1, 65535), st.integers(1, 65535))
def test_a_range_names_every_port_between_its_ends(a, b):
    low, high = min(a, b), max(a, b)
    assert parse_port_spec(f"{low}-{high}") == list(range(low, high + 1))


@given(TEXTS, TEXTS)
def test_a_range_is_accepted_only_when_both_ends_are_plain_port_numbers(low, high):
    text = f"{low}-{high}"
    if canonical_port(low) and canonical_port(high) and int(low) <= int(high):
        assert parse_port_spec([text]) == list(range(int(low), int(high) + 1))
    else:
        with pytest.raises(InvalidInput, match=r"^ports\[0\] "):
            parse_port_spec([text])


@given(TEXTS)
def test_a_single_port_in_a_spec_follows_the_path_rule(text):
    if canonical_port(text):
        assert parse_port_spec([text]) == [int(text)]
    else:
        with pytest.raises(InvalidInput):
            parse_port_spec([text])


@pytest.mark.parametrize("bad", [" tcp", "tcp ", "TCP\n", "both ", "ｔｃｐ"])
def test_protocols_take_nothing_around_the_word(bad):
    with pytest.raises(InvalidInput, match="^protocol must be"):
        parse_protocols(bad)


@pytest.mark.parametrize(
    ("ip", "ipv4"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::ffff:0.0.0.0", "0.0.0.0"),
        ("::FFFF:a00:5", "10.0.0.5"),
        ("0:0:0:0:0:ffff:ffff:ffff", "255.255.255.255"),
    ],
)
def test_an_ipv4_mapped_ip_is_refused_naming_the_ipv4_form(ip, ipv4):
    with pytest.raises(InvalidInput, match=f"IPv4-mapped IPv6 address: use its IPv4 form {ipv4}$"):
        parse_ip(ip)


def test_an_ipv4_mapped_ip_in_initial_ports_is_refused_naming_the_setting():
    spec = [{"ip": "0.0.0.0", "ports": "1-2"}, {"ip": "::ffff:127.0.0.1", "ports": "1-2"}]
    with pytest.raises(InvalidInput, match=r"^c\.json: pool\.initial_ports\[1\]\.ip .* 127\.0\.0\.1\)$"):
        parse({"pool": {"initial_ports": spec}}, Path("c.json"), "c.json")


@given(
    st.one_of(
        st.text(),
        st.binary(),
        st.integers(),
        st.lists(st.text(min_size=200)),
        st.dictionaries(st.text(), st.text(min_size=200)),
    )
)
@example("x" * 100_000)
@example(10**5000)
@example([10**5000])
def test_a_quote_of_any_input_is_short(value):
    assert len(quoted(value)) <= 140
