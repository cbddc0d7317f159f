import pytest

from lightd.core.entry import Entry, parse_in_use, parse_ip, parse_port, parse_port_text, parse_protocol
from lightd.core.ranges import parse_port_spec, parse_protocols
from lightd.errors import InvalidInput


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("0.0.0.0", "0.0.0.0"),
        ("127.0.0.1", "127.0.0.1"),
        ("::0", "::"),
        ("::", "::"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
    ],
)
def test_ip_is_stored_in_canonical_form(given, canonical):
    assert parse_ip(given) == canonical


@pytest.mark.parametrize(
    "bad",
    ["", "localhost", "256.1.1.1", "1.2.3", "fe80::1%eth0", 1, None, [], " 10.0.0.5", "10.0.0.5\n",
     "::ffff:127.0.0.1", "１.1.1.1"],
)
def test_bad_ip_is_refused_naming_the_field(bad):
    with pytest.raises(InvalidInput, match="^ip "):
        parse_ip(bad)


@pytest.mark.parametrize("good", [1, 25565, 65535])
def test_port_accepts_json_integers_in_range(good):
    assert parse_port(good) == good


@pytest.mark.parametrize("bad", [0, 65536, -1, "25565", 25565.0, True, False, None])
def test_port_refuses_strings_bools_floats_and_out_of_range(bad):
    with pytest.raises(InvalidInput, match="port must be an integer from 1 to 65535"):
        parse_port(bad)


@pytest.mark.parametrize("bad", ["", "abc", "-1", "0", "65536", "1e3", "２５"])
def test_path_port_must_be_plain_digits_in_range(bad):
    with pytest.raises(InvalidInput):
        parse_port_text(bad)


def test_path_port_parses_digits():
    assert parse_port_text("25565") == 25565


@pytest.mark.parametrize(("given", "expected"), [("tcp", "tcp"), ("UDP", "udp"), ("Tcp", "tcp")])
def test_protocol_is_case_insensitive_and_lowercased(given, expected):
    assert parse_protocol(given) == expected


@pytest.mark.parametrize("bad", ["sctp", "", "both", 6, None])
def test_bad_protocol_is_refused(bad):
    with pytest.raises(InvalidInput, match='protocol must be "tcp" or "udp"'):
        parse_protocol(bad)


@pytest.mark.parametrize("bad", [1, 0, "true", None])
def test_in_use_must_be_a_json_bool(bad):
    with pytest.raises(InvalidInput, match="in_use must be true or false"):
        parse_in_use(bad)


def test_port_spec_takes_numbers_ranges_and_lists_without_repeats():
    assert parse_port_spec([25565, "27015-27017", "25565"]) == [25565, 27015, 27016, 27017]
    assert parse_port_spec("1-3") == [1, 2, 3]


@pytest.mark.parametrize("bad", ["5-1", "0-5", "1-65536", "a-b", [], [True], "1-2-3"])
def test_bad_port_spec_is_refused(bad):
    with pytest.raises(InvalidInput):
        parse_port_spec(bad)


def test_protocols_expand_both():
    assert parse_protocols("both") == ("tcp", "udp")
    assert parse_protocols("UDP") == ("udp",)
    with pytest.raises(InvalidInput):
        parse_protocols("all")


def test_entry_labels_ipv6_in_brackets():
    assert Entry("::1", 53, "udp").label() == "[::1]:53/udp"
    assert Entry("0.0.0.0", 25565, "tcp").label() == "0.0.0.0:25565/tcp"
