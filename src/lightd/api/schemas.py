"""Request bodies (validated with the core's own parsing rules) and response shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from lightd.core.entry import Entry, parse_in_use, parse_ip, parse_port, parse_protocol

__all__ = [
    "AddPort",
    "BulkDelete",
    "EntryOut",
    "PortRef",
    "SetUse",
    "entry_out",
]


def _value_error(parse: Any) -> Any:
    """Run a core parser inside pydantic, so its message reaches the client with the field path."""

    def run(value: Any) -> Any:
        try:
            return parse(value)
        except Exception as exc:  # InvalidInput: pydantic only collects ValueError
            raise ValueError(str(exc)) from None

    return BeforeValidator(run)


Ip = Annotated[str, _value_error(parse_ip), Field(examples=["0.0.0.0"])]
Port = Annotated[int, _value_error(parse_port), Field(ge=1, le=65535, examples=[25565])]
Protocol = Annotated[Literal["tcp", "udp"], _value_error(parse_protocol)]
InUse = Annotated[bool, _value_error(parse_in_use)]
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


class EntryOut(BaseModel):
    ip: str
    port: int
    protocol: Literal["tcp", "udp"]
    in_use: bool
    container: str | None = Field(None, description="internal_id of the container holding it")
    note: str | None = None


def entry_out(entry: Entry) -> dict[str, Any]:
    return {
        "ip": entry.ip,
        "port": entry.port,
        "protocol": entry.protocol,
        "in_use": entry.in_use,
        "container": entry.container,
        "note": entry.note,
    }
