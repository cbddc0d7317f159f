"""Which runtime ``runtime.kind`` and ``runtime.socket`` give: an engine that answers, or none."""

from __future__ import annotations

from lightd.adapters.engine.docker_api import DockerEngine
from lightd.adapters.engine.names import socket_url
from lightd.adapters.engine.none import NoEngine
from lightd.errors import InvalidInput, LightdError

__all__ = ["detect"]


def detect(
    kind: str, socket: str, *, timeout: float = 30.0, ping_timeout: float = 3.0
) -> tuple[DockerEngine | NoEngine, str]:
    """Choose the runtime for ``runtime.kind``; return it and one sentence saying why.

    ``none``: NoEngine. ``docker``: DockerEngine even if it does not answer yet (its calls then
    raise Unavailable). ``auto``: DockerEngine when ``socket`` answers a ping now, else NoEngine.
    """
    if kind == "none":
        return NoEngine("runtime.kind is none"), "runtime.kind is none: bookkeeping only"
    if kind not in ("auto", "docker"):
        raise InvalidInput(f"runtime.kind must be auto, docker or none (got {kind!r})")
    url = socket_url(socket)
    engine = DockerEngine(url, timeout=timeout, ping_timeout=ping_timeout)
    why = engine.diagnose()
    if why is None:
        if engine.server:
            what = f"{engine.server}, API {engine.api_version}"
        else:
            try:
                what = f"version {engine.version()}"
            except LightdError:
                what = "version unknown"
        return engine, f"the container engine at {url} answers ({what})"
    if kind == "docker":
        return engine, (
            f"runtime.kind is docker but the engine at {url} does not answer yet ({why}); "
            "container operations fail until it does"
        )
    engine.close()
    reason = f"no container engine answers at {url} ({why}): bookkeeping only"
    return NoEngine(reason), reason
