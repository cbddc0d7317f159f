"""Status, the repair pass, and the firewall's own endpoints."""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from lightd.api.responses import json_response
from lightd.errors import InvalidInput
from lightd.service.pool_service import PoolService
from lightd.service.repair import RepairService

__all__ = ["add_system_routes"]


class _Daemon(Protocol):
    pool: PoolService
    repair: RepairService

    def status(self) -> dict[str, Any]: ...


def add_system_routes(app: FastAPI, daemon: _Daemon) -> None:
    @app.get("/api/v1/status", tags=["health"], summary="What lightd runs with, and why")
    async def status() -> Response:
        return json_response(daemon.status())

    @app.post("/api/v1/repair", tags=["health"],
              summary="Compare the pool with the host now (or join the pass under way)")
    async def repair(request: Request) -> Response:
        # The guard has read the body already (a body that is not JSON is refused there).
        if await request.body():
            raise InvalidInput("POST /api/v1/repair takes no request body")
        report = await daemon.repair.run()
        return json_response({"message": "Repair pass done", **report})

    @app.get("/network/firewall", tags=["firewall"],
             summary="Whether lightd manages the firewall, why, and what it found")
    async def firewall_status() -> Response:
        return json_response(daemon.pool.firewall.status())

    @app.post("/network/firewall/reconcile", tags=["firewall"],
              summary="Make lightd's chain equal to the pool again")
    async def reconcile() -> Response:
        report = await daemon.pool.reconcile_firewall()
        return json_response({"message": "Firewall reconciled", **report})
