"""``GET /metrics``: the daemon's figures in the Prometheus text format.

The guard asks for the bearer token as on every route, but not for lightd's vendor ``Accept``:
Prometheus sends its own (``text/plain``, OpenMetrics). Left out of the OpenAPI document, which
describes the JSON API: the README lists the metrics.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response

from lightd.api.middleware import METRICS_PATH
from lightd.errors import NotFound
from lightd.metrics import CONTENT_TYPE, Metrics

__all__ = ["add_metrics_route"]


def add_metrics_route(app: FastAPI, metrics: Metrics) -> None:
    @app.get(METRICS_PATH, include_in_schema=False)
    async def metrics_text() -> Response:
        # Async, so the scrape reads the pool on the event loop, between two of its changes.
        if not metrics.enabled:
            raise NotFound("Metrics are turned off (metrics.enabled is false)")
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)
