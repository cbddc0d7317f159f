"""Request bodies (validated with the core's own parsing rules) and response shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from lightd.api import openapi
from lightd.core.entry import entry_json as entry_out
from lightd.core.entry import parse_in_use, parse_ip, parse_port, parse_protocol
from lightd.core.leases import parse_ttl
from lightd.core.ranges import parse_port_spec, parse_protocols

__all__ = [
    "Ip",
    "Note",
    "Port",
    "Protocol",
    "value_error",
    "AddPort",
    "BulkAdd",
    "BulkDelete",
    "Claim",
    "EntryOut",
    "PortRef",
    "Renew",
    "SetUse",
    "entry_out",
]


def value_error(parse: Any) -> Any:
    """Run a core parser inside pydantic, so its message reaches the client with the field path."""

    def run(value: Any) -> Any:
        try:
            return parse(value)
        except Exception as exc:  # InvalidInput: pydantic only collects ValueError
            raise ValueError(str(exc)) from None

    return BeforeValidator(run)


# WithJsonSchema: OpenAPI documents what the core parsers accept (lightd.api.openapi).
Ip = Annotated[str, value_error(parse_ip), WithJsonSchema(openapi.IP_SCHEMA)]
Port = Annotated[int, value_error(parse_port), WithJsonSchema(openapi.PORT_SCHEMA)]
Protocol = Annotated[
    Literal["tcp", "udp"], value_error(parse_protocol), WithJsonSchema(openapi.PROTOCOL_SCHEMA)
]
InUse = Annotated[bool, value_error(parse_in_use)]
Note = Annotated[str | None, Field(default=None, max_length=500)]


class Body(BaseModel):
    # Unknown keys are ignored: panels written for the original daemon may send more.
    model_config = ConfigDict(extra="ignore")


class AddPort(Body):
    ip: Ip
    port: Port
    protocol: Protocol = "tcp"
    note: Note = None


class SetUse(Body):
    in_use: InUse


class PortRef(Body):
    ip: Ip
    port: Port
    protocol: Protocol | None = None


class BulkDelete(Body):
    ports: list[PortRef] = Field(max_length=131070)


def _parse_protocols(value: Any) -> Any:
    protocols = parse_protocols(value)
    return "both" if len(protocols) == 2 else protocols[0]


_PROTOCOLS_OF = {"tcp": ("tcp",), "udp": ("udp",), "both": ("tcp", "udp")}


Protocols = Annotated[
    Literal["tcp", "udp", "both"], value_error(_parse_protocols),
    WithJsonSchema(openapi.PROTOCOLS_SCHEMA),
]
Flag = Annotated[bool, value_error(lambda v: _strict_bool(v))]


def _strict_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError("count must be an integer from 1 to 65535")
    return value


class _WithProtocols(Body):
    protocol: Protocols = "tcp"

    @property
    def protocols(self) -> tuple[str, ...]:
        return _PROTOCOLS_OF[self.protocol]  # validation left one of the three


Ttl = Annotated[int, value_error(parse_ttl), WithJsonSchema(openapi.TTL_SCHEMA)]


class Claim(_WithProtocols):
    count: Annotated[int, value_error(_count), WithJsonSchema(openapi.COUNT_SCHEMA)] = 1
    ip: Ip | None = None
    contiguous: Flag = False
    note: Note = None
    ttl: Ttl | None = None


class Renew(Body):
    ttl: Ttl | None = None


class BulkAdd(_WithProtocols):
    ip: Ip
    ports: Annotated[
        list[int | str], value_error(parse_port_spec), WithJsonSchema(openapi.PORT_SPEC_SCHEMA)
    ]
    note: Note = None

    @property
    def numbers(self) -> list[int]:
        """``ports`` as validation left it: every number named, sorted, without repeats."""
        return [int(port) for port in self.ports]


class EntryOut(BaseModel):
    ip: str
    port: int
    protocol: Literal["tcp", "udp"]
    in_use: bool
    container: str | None = Field(None, description="internal_id of the container holding it")
    lease: str | None = Field(None, description="id of the lease holding it")
    note: str | None = None
