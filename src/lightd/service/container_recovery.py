"""Start-up repair of containers: finish or undo what a crash interrupted, from the database.

Every change to a container saves its intent before it asks the engine (``creating``,
``rebinding`` with the new bindings in ``pending``, ``deleting``). At start, each intent is
settled against what the engine really has, so that afterwards the container runs on its old
ports or on its new ones (never both, never none), the engine has one container for it, and the
pool's holders say the same:

``creating``
    the client never got an answer: undone, with any container the engine made.
``deleting``
    finished: whatever the engine still has of it is removed and its ports are freed.
``rebinding``
    the new container is kept only when the old one is gone (the crash came after the swap's
    point of no return); else the old one stays, is started again if the swap had stopped it,
    and the new one is removed.

Any other engine container carrying the container's label is a stray (a rebind's new container
that could not be removed, or one a crash left) and is removed: it publishes ports the pool no
longer gives to this container.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lightd.core.changes import Change, DeleteContainer, put_container, put_port
from lightd.core.containers import Binding, Container
from lightd.core.engine_view import ContainerInfo
from lightd.core.entry import Entry
from lightd.errors import LightdError

if TYPE_CHECKING:
    from lightd.service.containers import ContainerService

__all__ = ["reconcile"]

log = logging.getLogger(__name__)


async def reconcile(service: ContainerService) -> dict[str, Any]:
    """Settle every intent the database holds; return what was done, by internal_id."""
    report: dict[str, Any] = {
        "rolled_back": [],
        "rolled_forward": [],
        "deleted": [],
        "missing": [],
        "strays_removed": [],
    }
    managed = await service._engine(service.engine.list_managed)
    by_internal_id: dict[str, list[ContainerInfo]] = {}
    for info in managed:
        by_internal_id.setdefault(str(info["internal_id"]), []).append(info)
    changes: list[Change] = []
    for container in list(service.containers.values()):
        seen = by_internal_id.get(container.internal_id, [])
        if container.state in ("creating", "deleting"):
            changes += await _drop(service, container, seen)
            key = "rolled_back" if container.state == "creating" else "deleted"
            report[key].append(container.internal_id)
            continue
        stopped: str | None = None
        if container.state == "rebinding":
            forward, stopped = await _settle_rebind(service, container, seen)
            report["rolled_forward" if forward else "rolled_back"].append(container.internal_id)
            changes += [*map(put_port, _free_given_up(service, container))]
        for info in seen:
            if info["id"] != container.engine_id:
                await service._engine(service.engine.remove, str(info["id"]), True)
                report["strays_removed"].append(str(info["name"] or info["id"]))
        if stopped is not None:
            # Only now: until the new container is gone it may hold a port both share.
            await _start_again(service, container, stopped)
        if service.engine.kind != "none" and container.engine_id is not None:
            alive = any(info["id"] == container.engine_id for info in seen)
            if not alive:
                if container.state != "missing":
                    log.warning(
                        "container %s (engine id %s) is gone from the engine; its ports stay "
                        "held until it is deleted or rebound",
                        container.internal_id,
                        container.engine_id,
                    )
                report["missing"].append(container.internal_id)
            container.state = "running" if alive else "missing"
        changes.append(put_container(container))
    if changes:
        await service.pools.save(changes)
    return report


async def _drop(
    service: ContainerService, container: Container, seen: Sequence[ContainerInfo]
) -> list[Change]:
    """Remove every engine container of ``container`` and forget it; its ports are freed."""
    for info in seen:
        await service._engine(service.engine.remove, str(info["id"]), True)
    freed = service._release(service._entries(container.bindings), container.internal_id)
    del service.containers[container.internal_id]
    return [*map(put_port, freed), DeleteContainer(container.internal_id)]


async def _settle_rebind(
    service: ContainerService, container: Container, seen: Sequence[ContainerInfo]
) -> tuple[bool, str | None]:
    """Keep the old container or the new one: return whether the new one was kept, and the id
    of the old one if the swap had stopped it (to start again once the new one is removed).

    ``container`` is left ``running`` with the bindings of the one kept, ``pending`` holding the
    bindings given up, for :func:`_free_given_up`.
    """
    pending = list(container.pending or [])
    old = next((i for i in seen if i["id"] == container.engine_id), None)
    new = next((i for i in seen if i is not old and _publishes(i, pending)), None)
    container.state = "running"
    if service.engine.kind == "none" or old is not None or new is None:
        container.pending = pending  # given up: the new ports
        stopped = old is not None and old["state"] != "running"
        return False, str(old["id"]) if old is not None and stopped else None
    # The old container is gone and the new one runs: the swap had passed its point of no
    # return, so finish it (the client may never have heard, but its ports are the new ones).
    container.pending = container.bindings  # given up: the old ports
    container.bindings, container.engine_id = pending, str(new["id"])
    if new["name"] != container.internal_id:
        try:
            await service._engine(service.engine.rename, str(new["id"]), container.internal_id)
        except LightdError as exc:
            log.warning("container %s keeps the name %s: %s", container.internal_id, new["name"], exc.message)
    return True, None


def _free_given_up(service: ContainerService, container: Container) -> list[Entry]:
    """Free the entries of the bindings :func:`_settle_rebind` gave up, and clear ``pending``."""
    kept = container.keys()
    given_up = service._entries(container.pending or [])
    container.pending = None
    return service._release((e for e in given_up if e.key not in kept), container.internal_id)


def _publishes(info: ContainerInfo, bindings: Sequence[Binding]) -> bool:
    return sorted(info["bindings"]) == sorted(bindings)


async def _start_again(service: ContainerService, container: Container, engine_id: str) -> None:
    """The swap stopped the old container to free a shared port, then the daemon died."""
    try:
        await service._engine(service.engine.start, engine_id)
    except LightdError as exc:
        log.error("container %s could not be started again: %s", container.internal_id, exc.message)
