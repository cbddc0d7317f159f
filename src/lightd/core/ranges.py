"""Port specifications as operators write them: ``25565``, ``"27015-27030"``, or a list of both."""

from __future__ import annotations

from typing import Any

from lightd.core.entry import PORT_TEXT_RULE, parse_port, parse_port_text
from lightd.errors import InvalidInput, quoted

__all__ = ["MAX_SPEC_ITEMS", "parse_port_spec", "parse_protocols"]

# A spec names at most every port once; more items than that can only be repeats.
MAX_SPEC_ITEMS = 65535


def _one(item: Any, field: str) -> range:
    if isinstance(item, str):
        # The same text rule as a port in a path: "+25570", " 25570" or "２５５７０" are refused.
        low_text, dash, high_text = item.partition("-")
        try:
            low = parse_port_text(low_text, field)
            high = parse_port_text(high_text, field) if dash else low
        except InvalidInput:
            raise InvalidInput(
                f"{field} must be an integer from 1 to 65535 or a range like \"27015-27030\", "
                f"in {PORT_TEXT_RULE} (got {quoted(item)})"
            ) from None
        if high < low:
            raise InvalidInput(f"{field} range {quoted(item)} ends before it starts")
        return range(low, high + 1)
    port = parse_port(item, field)
    return range(port, port + 1)


def parse_port_spec(spec: Any, field: str = "ports") -> list[int]:
    """Every port a spec names, sorted, without repeats."""
    items = spec if isinstance(spec, list) else [spec]
    if not items:
        raise InvalidInput(f"{field} must name at least one port")
    if len(items) > MAX_SPEC_ITEMS:
        raise InvalidInput(f"{field} must list at most {MAX_SPEC_ITEMS} items")
    ports: set[int] = set()
    for index, item in enumerate(items):
        ports.update(_one(item, f"{field}[{index}]" if isinstance(spec, list) else field))
    return sorted(ports)


def parse_protocols(value: Any, field: str = "protocol") -> tuple[str, ...]:
    """``tcp``, ``udp`` or ``both``, any case; nothing around it."""
    if isinstance(value, str) and len(value) <= 4 and value.isascii():
        lowered = value.lower()
        if lowered == "both":
            return ("tcp", "udp")
        if lowered in ("tcp", "udp"):
            return (lowered,)
    raise InvalidInput(f"{field} must be \"tcp\", \"udp\" or \"both\" (got {quoted(value)})")
