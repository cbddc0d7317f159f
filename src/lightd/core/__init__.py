"""Pure pool rules: entries, availability, conflicts. Standard library only, no I/O."""

from lightd.core.entry import (
    Entry,
    Key,
    canonical_ip,
    is_wildcard,
    parse_in_use,
    parse_ip,
    parse_port,
    parse_protocol,
)
from lightd.core.pool import Pool

__all__ = [
    "Entry",
    "Key",
    "Pool",
    "canonical_ip",
    "is_wildcard",
    "parse_in_use",
    "parse_ip",
    "parse_port",
    "parse_protocol",
]
