"""Leases under /network/leases: list, get, renew, release, keep (claims with a ttl make them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Body, FastAPI
from starlette.responses import Response

from lightd.api.responses import json_response
from lightd.api.schemas import Renew, entry_out
from lightd.core.entry import Entry
from lightd.core.leases import Lease
from lightd.service.leases import LeaseService

__all__ = ["add_lease_routes", "lease_out"]


def lease_out(lease: Lease, entries: Sequence[Entry]) -> dict[str, Any]:
    return {**lease.to_json(), "ports": [entry_out(e) for e in entries]}


def add_lease_routes(app: FastAPI, service: LeaseService) -> None:
    tags: list[Any] = ["leases"]
    prefix = "/network/leases"

    @app.get(prefix, tags=tags, summary="Every lease, soonest to expire first")
    async def list_leases() -> Response:
        return json_response({"leases": [lease_out(*item) for item in await service.all()]})

    @app.get(prefix + "/{lease_id}", tags=tags, summary="One lease and the ports it holds")
    async def get_lease(lease_id: str) -> Response:
        return json_response(lease_out(*await service.get(lease_id)))

    @app.post(prefix + "/{lease_id}/renew", tags=tags,
              summary="Move the expiry to ttl seconds from now (the lease's own ttl by default)")
    async def renew(lease_id: str, body: Annotated[Renew | None, Body()] = None) -> Response:
        ttl = None if body is None else body.ttl
        return json_response(lease_out(*await service.renew(lease_id, ttl)))

    @app.delete(prefix + "/{lease_id}", tags=tags, summary="Free the lease's ports now")
    async def release(lease_id: str) -> Response:
        freed = await service.release(lease_id)
        return json_response({"message": "Lease released", "freed": [entry_out(e) for e in freed]})

    @app.post(prefix + "/{lease_id}/keep", tags=tags,
              summary="Keep the ports in use, held by the operator, with no expiry")
    async def keep(lease_id: str) -> Response:
        kept = await service.keep(lease_id)
        return json_response({"message": "Lease kept", "kept": [entry_out(e) for e in kept]})
