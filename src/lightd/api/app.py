"""The FastAPI app factory. The daemon object it serves is built by ``lightd.bootstrap``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from fastapi import FastAPI
from starlette.responses import Response

from lightd import __version__
from lightd.api import hot
from lightd.api.errors import install_error_handlers
from lightd.api.hot import FastPath
from lightd.api.middleware import GuardMiddleware
from lightd.api.openapi import install_openapi
from lightd.api.responses import json_response
from lightd.api.routes_containers import add_container_routes
from lightd.api.routes_events import add_event_routes
from lightd.api.routes_leases import add_lease_routes
from lightd.api.routes_metrics import add_metrics_route
from lightd.api.routes_pool import add_pool_routes
from lightd.api.routes_system import add_system_routes
from lightd.metrics import Metrics
from lightd.service.containers import ContainerService
from lightd.service.events import EventHub
from lightd.service.leases import LeaseService
from lightd.service.pool_service import PoolService
from lightd.service.repair import RepairService

__all__ = ["Daemon", "create_app"]


class Daemon(Protocol):
    """What the app needs from the composition root."""

    token: str
    pool: PoolService
    containers: ContainerService
    repair: RepairService
    metrics: Metrics
    leases: LeaseService
    events: EventHub

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


def create_app(daemon: Daemon, fast_path: bool = True) -> FastAPI:
    """The app; ``fast_path=False`` serves the hot routes through FastAPI too (tests compare)."""
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await daemon.start()
        try:
            yield
        finally:
            await daemon.stop()

    app = FastAPI(
        title="lightd",
        version=__version__,
        description=(
            "Owns the host's pool of network ports. Every route except ping and the docs needs "
            "`Authorization: Bearer lightd_<token>` and `Accept: Application/vnd.pkglatv1+json`. "
            'Every error is `{"error": "<one sentence>"}`, with the statuses each operation lists.'
        ),
        lifespan=lifespan,
    )
    install_error_handlers(app)

    @app.get("/api/v1/public/ping", tags=["health"], summary="Health check, no token needed")
    async def ping() -> Response:
        return json_response(hot.ping())

    add_pool_routes(app, daemon.pool, daemon.leases)
    add_container_routes(app, daemon.containers)
    add_lease_routes(app, daemon.leases)
    add_event_routes(app, daemon.events)
    add_system_routes(app, daemon)
    add_metrics_route(app, daemon.metrics)
    install_openapi(app)
    # Added last, runs first: the guard, then the fast path for ping, random and claim (which
    # also counts the requests for the metrics, so it is there with fast_path=False too).
    app.add_middleware(FastPath, service=daemon.pool, leases=daemon.leases,
                       metrics=daemon.metrics, hot=fast_path)
    app.add_middleware(GuardMiddleware, token=daemon.token, metrics=daemon.metrics,
                       routes=app.routes)
    return app

