"""Port specifications as operators write them: ``25565``, ``"27015-27030"``, or a list of both."""

from __future__ import annotations

from typing import Any

from lightd.core.entry import parse_port
from lightd.errors import InvalidInput

__all__ = ["parse_port_spec", "parse_protocols"]


def _one(item: Any, field: str) -> range:
    if isinstance(item, str):
        text = item.strip()
        low_text, dash, high_text = text.partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if dash else low
        except ValueError:
            raise InvalidInput(
                f"{field} must be a port number or a range like \"27015-27030\" (got {item!r})"
            ) from None
        parse_port(low, field)
        parse_port(high, field)
        if high < low:
            raise InvalidInput(f"{field} range {item!r} ends before it starts")
        return range(low, high + 1)
    port = parse_port(item, field)
    return range(port, port + 1)


def parse_port_spec(spec: Any, field: str = "ports") -> list[int]:
    """Every port a spec names, sorted, without repeats."""
    items = spec if isinstance(spec, list) else [spec]
    if not items:
        raise InvalidInput(f"{field} must name at least one port")
    ports: set[int] = set()
    for index, item in enumerate(items):
        ports.update(_one(item, f"{field}[{index}]" if isinstance(spec, list) else field))
    return sorted(ports)


def parse_protocols(value: Any, field: str = "protocol") -> tuple[str, ...]:
    """``tcp``, ``udp`` or ``both``."""
    if isinstance(value, str) and value.strip().lower() == "both":
        return ("tcp", "udp")
    if isinstance(value, str) and value.strip().lower() in ("tcp", "udp"):
        return (value.strip().lower(),)
    raise InvalidInput(f"{field} must be \"tcp\", \"udp\" or \"both\" (got {value!r})")
