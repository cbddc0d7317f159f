"""The two request headers every protected route checks: ``Authorization`` and ``Accept``.

Pure functions over the raw header bytes, so they are cheap on the hot paths and can be tested on
their own (tests/unit/test_headers.py).
"""

from __future__ import annotations

import re

__all__ = ["accepts", "bearer_credentials", "split_outside_quotes"]

# RFC 9110 section 12.4.2: "0" [ "." 0*3DIGIT ] / "1" [ "." 0*3("0") ].
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")
_SPACES = " \t"


def bearer_credentials(header: bytes) -> bytes | None:
    """The credentials of ``Bearer <token>``, the scheme in any case (RFC 7235), or None."""
    scheme, _, credentials = header.strip(b" \t").partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return credentials.lstrip(b" ")


def split_outside_quotes(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator``, except inside a quoted-string (with ``\\`` escapes)."""
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _weight(parameters: list[str]) -> float | None:
    """The ``q`` of a media range (1 when absent), or None when it is not a valid qvalue."""
    weight = 1.0
    for parameter in parameters:
        name, _, value = parameter.strip(_SPACES).partition("=")
        if name.strip(_SPACES).lower() == "q":
            value = value.strip(_SPACES)
            if _QVALUE.fullmatch(value) is None:
                return None
            weight = float(value)
    return weight


def accepts(header: bytes, media_type: bytes) -> bool:
    """Whether an ``Accept`` header lists ``media_type`` itself (any case) with a q above 0.

    The header is a comma-separated list of media ranges, each with ``;`` parameters. Wildcards
    (``*/*``, ``application/*``) do not count: a client must name lightd's vendor type, as the
    original daemon required.
    """
    if header.lower() == media_type:  # what every client sends: no parsing needed
        return True
    wanted = media_type.decode("latin-1")
    for media_range in split_outside_quotes(header.decode("latin-1"), ","):
        kind, *parameters = split_outside_quotes(media_range, ";")
        if kind.strip(_SPACES).lower() == wanted:
            weight = _weight(parameters)
            if weight is not None and weight > 0:
                return True
    return False
