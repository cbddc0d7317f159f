"""The seed's endpoints under /network/ports: validate, call the service, shape the answer."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, TypeVar

from fastapi import Body, FastAPI, Query
from starlette.requests import Request
from starlette.responses import Response

from lightd.api import hot
from lightd.api.responses import json_response
from lightd.api.schemas import AddPort, BulkAdd, BulkDelete, Claim, EntryOut, SetUse, entry_out
from lightd.core import holders
from lightd.core.entry import Entry, parse_bounded, parse_ip, parse_port_text, parse_protocol
from lightd.errors import InvalidInput, quoted
from lightd.service.leases import LeaseService
from lightd.service.pool_service import PoolService

__all__ = ["PAGE_MAX", "add_pool_routes"]

F = TypeVar("F", bound=Callable[..., Any])


class _Prefixed:
    """``app.get("/x")`` with a path prefix and tags, like an APIRouter without the nesting."""

    def __init__(self, app: FastAPI, prefix: str, tags: list[str | Enum]) -> None:
        self.app, self.prefix, self.tags = app, prefix, tags

    def _route(self, method: str, path: str, **options: Any) -> Callable[[F], F]:
        return self.app.api_route(
            self.prefix + path, methods=[method], tags=self.tags, **options
        )

    def get(self, path: str, **options: Any) -> Callable[[F], F]:
        return self._route("GET", path, **options)

    def post(self, path: str, **options: Any) -> Callable[[F], F]:
        return self._route("POST", path, **options)

    def put(self, path: str, **options: Any) -> Callable[[F], F]:
        return self._route("PUT", path, **options)

    def delete(self, path: str, **options: Any) -> Callable[[F], F]:
        return self._route("DELETE", path, **options)


ProtocolQuery = Annotated[
    str | None,
    Query(description="tcp or udp; needed only when the ip:port exists for both"),
]


# The most a ``limit`` or ``offset`` can usefully be: more entries than any pool holds.
PAGE_MAX = 1_000_000_000


def _query_bool(value: str, field: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false", "1", "0"):
        raise InvalidInput(f"{field} must be true or false (got {quoted(value)})")
    return lowered in ("true", "1")


def _entry_args(ip: str, port: str, protocol: str | None) -> tuple[str, int, str | None]:
    return (
        parse_ip(ip),
        parse_port_text(port),
        None if protocol is None else parse_protocol(protocol),
    )


def _warned(answer: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """The seed's answer as it is, plus ``warnings`` when there are any (ports the kernel may
    give to outgoing connections, see lightd.adapters.reserved_ports)."""
    if warnings:
        answer["warnings"] = warnings
    return answer


def _holder(entry: Entry) -> str:
    holder = holders.holder_of(entry)
    return "nobody" if holder is None else holder.describe()


def add_pool_routes(app: FastAPI, service: PoolService, leases: LeaseService) -> None:
    """Routes go straight on the app: an included router costs a second match per request."""
    router = _Prefixed(app, "/network/ports", ["pool"])

    @router.get(
        "/random",
        response_model=EntryOut,
        summary="A random available port; does not mark it in use",
        openapi_extra={"parameters": [
            {"name": "ip", "in": "query", "required": False, "schema": {"type": "string"}},
            {"name": "protocol", "in": "query", "required": False,
             "schema": {"type": "string", "enum": ["tcp", "udp"]}},
        ]},
    )
    async def random(request: Request) -> Response:
        return json_response(await hot.random_port(service, request.query_params))

    @router.post("", status_code=201, summary="Add a port to the pool")
    async def add_port(body: AddPort) -> Response:
        entry = await service.add(body.ip, body.port, body.protocol, body.note)
        answer: dict[str, Any] = {
            "message": "Port added to pool",
            "ip": entry.ip,
            "port": entry.port,
            "protocol": entry.protocol,
            "note": entry.note,
        }
        return json_response(_warned(answer, service.reserved.warnings([entry.port])), 201)

    @router.get("", summary="List the ports in the pool (all of them without parameters)")
    async def list_ports(
        ip: Annotated[str | None, Query()] = None,
        protocol: Annotated[str | None, Query(description="tcp or udp")] = None,
        in_use: Annotated[str | None, Query(description="true or false")] = None,
        limit: Annotated[str | None, Query(description="at most this many entries")] = None,
        offset: Annotated[str | None, Query(description="skip this many entries first")] = None,
    ) -> Response:
        entries, total = await service.entries(
            ip=None if ip is None else parse_ip(ip),
            protocol=None if protocol is None else parse_protocol(protocol),
            in_use=None if in_use is None else _query_bool(in_use, "in_use"),
            limit=None if limit is None else parse_bounded(limit, "limit", 0, PAGE_MAX),
            offset=0 if offset is None else parse_bounded(offset, "offset", 0, PAGE_MAX),
        )
        return json_response({"ports": [entry_out(e) for e in entries], "total": total})

    @router.post("/bulk", status_code=201, summary="Add ports and ranges in one transaction")
    async def bulk_add(body: BulkAdd) -> Response:
        added, skipped = await service.add_many(body.ip, body.protocols, body.numbers, body.note)
        answer: dict[str, Any] = {
            "message": f"Added {len(added)} ports to pool",
            "added_count": len(added),
            "skipped_count": len(skipped),
            "skipped": [
                {"ip": e.ip, "port": e.port, "protocol": e.protocol,
                 "reason": "Port already exists in pool"}
                for e in skipped
            ],
        }
        warnings = service.reserved.warnings(sorted({e.port for e in added}))
        return json_response(_warned(answer, warnings), 201)

    @router.post("/claim", summary="Pick available ports at random and mark them in use, atomically")
    async def claim(body: Annotated[Claim | None, Body()] = None) -> Response:
        # No body at all claims with every default (one tcp port), as the fast path does.
        return json_response(await hot.claim_ports(service, leases, body or Claim()))

    @router.post("/bulk-delete", summary="Delete many ports in one transaction")
    async def bulk_delete(body: BulkDelete) -> Response:
        result = await service.bulk_delete((p.ip, p.port, p.protocol) for p in body.ports)
        count = len(result.deleted)
        payload: dict[str, Any] = {
            "message": f"Deleted {count} ports from pool",
            "deleted_count": count,
            "not_found": result.not_found,
            "skipped": [
                {**entry_out(e), "reason": f"held by {_holder(e)}"}
                for e in result.skipped
            ],
        }
        return json_response(payload)

    @router.get("/{ip}/{port}", response_model=EntryOut, summary="One port of the pool")
    async def get_port(ip: str, port: str, protocol: ProtocolQuery = None) -> Response:
        entry = await service.get(*_entry_args(ip, port, protocol))
        return json_response(entry_out(entry))

    @router.put("/{ip}/{port}/use", summary="Mark a port in use or free (idempotent)")
    async def set_use(ip: str, port: str, body: SetUse, protocol: ProtocolQuery = None
                      ) -> Response:
        entry, changed = await service.set_use(*_entry_args(ip, port, protocol), body.in_use)
        return json_response(
            {
                "message": "Port usage updated",
                "ip": entry.ip,
                "port": entry.port,
                "protocol": entry.protocol,
                "in_use": entry.in_use,
                "changed": changed,
            }
        )

    @router.delete("/{ip}/{port}", summary="Remove a port from the pool")
    async def delete_port(ip: str, port: str, protocol: ProtocolQuery = None) -> Response:
        await service.delete(*_entry_args(ip, port, protocol))
        return json_response({"message": "Port deleted from pool"})

