"""The Accept and Authorization parsers, against a model of what the RFCs say."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from lightd.api.headers import accepts, bearer_credentials

VENDOR = b"application/vnd.pkglatv1+json"

OTHER_TYPES = [
    "*/*",
    "application/*",
    "application/json",
    "text/html",
    "xapplication/vnd.pkglatv1+jsonx",
    "application/vnd.pkglatv1+jsonx",
    "application/vnd.pkglatv1",
    "application/vnd.pkglatv2+json",
]


def any_case(text: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(text, upper, strict=True))
    )


QVALUES = st.one_of(
    st.sampled_from(["0", "0.", "0.0", "0.000", "1", "1.", "1.0", "1.000"]),
    st.integers(0, 999).map(lambda n: f"0.{n:03d}"),
    st.integers(0, 99).map(lambda n: f"0.{n}"),
)
BAD_QVALUES = st.sampled_from(["", "2", "1.5", "-1", "0.0001", "abc", "1.001", ".5", "0,5", "0.5x"])
SPACES = st.sampled_from(["", " ", "  ", "\t"])


def valid_qvalue(value: str) -> bool:
    """RFC 9110 12.4.2, read from the grammar: "0" or "1", then "." and up to three digits
    (only zeros after a 1)."""
    head, dot, tail = value.partition(".")
    if head not in ("0", "1") or len(tail) > 3 or not all(c in "0123456789" for c in tail):
        return False
    return not dot and not tail or bool(dot) and (head == "0" or set(tail) <= {"0"})


@st.composite
def media_range(draw):
    """One media range, and whether it lists the vendor type with a valid q above 0."""
    is_vendor = draw(st.booleans())
    kind = draw(any_case(VENDOR.decode())) if is_vendor else draw(st.sampled_from(OTHER_TYPES))
    parameters = []
    weights: list[str] = []
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.booleans()):
            value = draw(st.one_of(QVALUES, BAD_QVALUES))
            parameters.append(f"{draw(any_case('q'))}={value}")
            weights.append(value)
        else:
            # A quoted value may hold the separators and even the vendor type itself.
            parameters.append(
                draw(st.sampled_from(["charset=utf-8", "level=1", 'x="a,b;c"', f'x="{VENDOR.decode()}"']))
            )
    valid = all(valid_qvalue(w) for w in weights)
    weight = float(weights[-1]) if weights and valid else 1.0
    text = draw(SPACES) + kind + "".join(draw(SPACES) + ";" + draw(SPACES) + p for p in parameters)
    return text + draw(SPACES), is_vendor and valid and weight > 0


@given(st.lists(media_range(), min_size=1, max_size=5))
def test_accept_lists_the_vendor_type_exactly_when_one_range_names_it_with_q_above_zero(ranges):
    header = ",".join(text for text, _ in ranges).encode()
    assert accepts(header, VENDOR) == any(wanted for _, wanted in ranges)


@given(st.lists(media_range(), min_size=1, max_size=5), st.randoms())
def test_the_order_of_the_ranges_does_not_matter(ranges, random):
    header = ",".join(text for text, _ in ranges).encode()
    random.shuffle(ranges)
    shuffled = ",".join(text for text, _ in ranges).encode()
    assert accepts(header, VENDOR) == accepts(shuffled, VENDOR)


@given(st.binary(max_size=200))
@example(b"xapplication/vnd.pkglatv1+jsonx")
@example(b"application/vnd.pkglatv1+json;q=0")
@example(b'text/plain;x="application/vnd.pkglatv1+json"')
@example(b'"application/vnd.pkglatv1+json')
def test_any_header_gets_an_answer_and_a_yes_needs_the_type_itself(header):
    if accepts(header, VENDOR):
        assert VENDOR in header.lower()
    lowered = header.lower()
    if b"q=" not in lowered and b'"' not in header and b"," not in header:
        # A single range without weights: accepted exactly when it is the type.
        assert accepts(header, VENDOR) == (lowered.split(b";")[0].strip(b" \t") == VENDOR)


@given(any_case("bearer"), st.sampled_from([" ", "  "]), st.text("abcdef0123456789_", max_size=40))
def test_the_bearer_scheme_is_read_in_any_case(scheme, space, token):
    assert bearer_credentials(f"{scheme}{space}{token}".encode()) == token.encode()


@given(st.binary(max_size=60))
def test_credentials_come_only_with_the_bearer_scheme(header):
    credentials = bearer_credentials(header)
    if credentials is not None:
        assert header.strip(b" \t")[:7].lower() in (b"bearer ", b"bearer")
