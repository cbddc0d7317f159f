"""The seed's port binding workflow: create a container on pool ports, rebind it, delete it.

Every change follows one order, so that a crash at any moment is repairable at the next start:

1. decide and mark the ports in memory, without yielding (two requests never take one port);
2. save the marks together with the container in state ``creating``/``rebinding`` (intent);
3. ask the engine (slow; in a thread);
4. save the outcome: ``running`` with the new bindings, or everything put back as it was.

A crash between 2 and 4 leaves an intent in the database; :meth:`ContainerService.reconcile`
finishes or undoes it at start-up. Operations on one container are serialised by a lock;
different containers proceed in parallel.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from lightd.core import holders
from lightd.core.changes import Change, DeleteContainer, put_container, put_port
from lightd.core.containers import Binding, Container, rebind_name
from lightd.core.entry import Entry
from lightd.crash_points import crash_point
from lightd.errors import AlreadyExists, Conflict, InvalidInput, LightdError, NotFound, Unavailable
from lightd.service import container_recovery
from lightd.service.leases import LeaseService
from lightd.service.pool_service import PoolService, ports_json
from lightd.service.ports import Engine

__all__ = ["ContainerService", "PortRequest"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class PortRequest:
    """One binding asked for: a given pool entry (``port`` set), or any free one (``port`` None)."""

    protocol: str
    ip: str | None = None
    port: int | None = None
    container_port: int | None = None


@dataclass
class Taken:
    """What a create or rebind took for its container: the entries it marked and who held each
    before (None: free; a lease, whose entries a container takes over)."""

    entries: list[Entry]
    before: list[holders.Holder | None]

    def leases(self) -> list[str]:
        return [h.name for h in self.before if h is not None and h.kind == "lease" and h.name]


class ContainerService:
    def __init__(
        self,
        pools: PoolService,
        engine: Engine,
        stop_timeout: int = 10,
        leases: LeaseService | None = None,
    ) -> None:
        self.pools = pools
        self.leases = leases
        self.engine = engine
        self.stop_timeout = stop_timeout
        self.containers: dict[str, Container] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._executor = ThreadPoolExecutor(8, thread_name_prefix="lightd-engine")
        pools.reload_hooks.append(self.load)

    # -- life cycle --------------------------------------------------------------------------

    def load(self) -> None:
        containers = (Container.from_json(json.loads(b)) for b in self.pools.stored_containers())
        self.containers = {c.internal_id: c for c in containers}

    async def close(self) -> None:
        self._executor.shutdown(wait=True)

    async def _engine(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: call(*args, **kwargs))

    def _lock(self, internal_id: str) -> asyncio.Lock:
        return self._locks.setdefault(internal_id, asyncio.Lock())

    # -- reading -----------------------------------------------------------------------------

    def get(self, internal_id: str) -> Container:
        container = self.containers.get(internal_id)
        if container is None:
            raise NotFound(f"Container {internal_id} not found")
        return container

    async def inspect(self, internal_id: str) -> Mapping[str, Any] | None:
        """What the engine says about it now; None when it cannot be asked."""
        container = self.get(internal_id)
        if container.engine_id is None:
            return None
        try:
            return await self._engine(self.engine.inspect, container.engine_id)
        except LightdError as exc:
            log.warning("cannot inspect container %s: %s", internal_id, exc.message)
            return None

    # -- create ------------------------------------------------------------------------------

    async def create(
        self,
        internal_id: str,
        image: str,
        requests: Sequence[PortRequest],
        command: list[str] | str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Container:
        await self.pools.unclaimed()  # then no yield until the ports are marked
        if internal_id in self.containers:
            raise AlreadyExists(f"Container {internal_id} already exists")
        bindings, taken = self._claim(requests, internal_id)
        marked = taken.entries
        container = Container(internal_id, image, command, dict(env or {}), bindings)
        self.containers[internal_id] = container
        async with self._lock(internal_id):
            try:
                await self.pools.save([*map(put_port, marked), put_container(container)])
            except LightdError:
                self.containers.pop(internal_id, None)  # memory was rebuilt from the store
                raise
            crash_point("create.intent_saved")
            try:
                container.engine_id = await self._engine(
                    self.engine.create, internal_id, image, command, env, bindings,
                    internal_id=internal_id,
                )
            except LightdError as exc:
                self._give_back(taken, internal_id)
                del self.containers[internal_id]
                await self.pools.save([*map(put_port, marked), DeleteContainer(internal_id)])
                raise _engine_error(exc) from None
            crash_point("create.engine_done")
            container.state = "running"
            told = {"container": container.public_json(), "ports": ports_json(self._entries(bindings))}
            await self.pools.save([put_container(container), *self._emptied(taken)],
                                  [("container.created", told)])
        return container

    # -- rebind ------------------------------------------------------------------------------

    async def rebind(self, internal_id: str, requests: Sequence[PortRequest]) -> Container:
        async with self._lock(internal_id):
            container = self.get(internal_id)
            if container.state not in ("running", "missing"):
                raise Conflict(f"Container {internal_id} is {container.state}; try again later")
            await self.pools.unclaimed()
            bindings, taken = self._claim(requests, internal_id)
            marked = taken.entries
            previous_state = container.state
            container.state, container.pending = "rebinding", bindings
            await self.pools.save([*map(put_port, marked), put_container(container)])
            crash_point("rebind.intent_saved")
            try:
                engine_id = await self._engine(self._swap, container, bindings)
            except LightdError as exc:
                if not exc.details.get("new_ports_held"):
                    self._give_back(taken, internal_id)
                container.state, container.pending = previous_state, None
                await self.pools.save([*map(put_port, marked), put_container(container)])
                raise _engine_error(exc) from None
            kept = {b.key for b in bindings}
            freed = self._release(
                (e for e in self._entries(container.bindings) if e.key not in kept), internal_id
            )
            container.bindings, container.engine_id = bindings, engine_id
            container.state, container.pending = "running", None
            told = {"container": container.public_json(),
                    "ports": ports_json(self._entries(bindings)), "freed": ports_json(freed)}
            await self.pools.save(
                [*map(put_port, freed), put_container(container), *self._emptied(taken)],
                [("container.rebound", told)],
            )
        return container

    def _swap(self, container: Container, bindings: list[Binding]) -> str:
        """Replace the engine container by one with ``bindings``; return the new one's id.

        Runs in a worker thread. The engine cannot change a container's bindings, so a new one
        is created under another name, then the old one is removed and the new one renamed.
        When old and new share a host port, the old one must stop first.

        Whatever fails, the engine is left with one container for this internal_id, and the
        ports it publishes are the ones the caller will hold:
        - before the new container exists: the old one is started again (if it was stopped),
          and the error goes up (the caller frees the new ports);
        - the old one cannot be removed: the new one is removed and the old one restarted; if
          the new one cannot be removed either, the error says the new ports stay held
          (``new_ports_held``), since a container publishes them: a leak, never two holders;
        - the rename fails: the swap is done all the same (the old one is gone, the new one
          runs), and the container keeps its other name until the next rebind.
        """
        old = container.engine_id
        shared = {b.key for b in bindings} & container.keys()
        stopped = False
        if old is not None and shared:
            self.engine.stop(old, timeout=self.stop_timeout)
            stopped = True
            crash_point("rebind.old_stopped")
        name = self._new_name(container)
        try:
            if name != container.internal_id:
                self.engine.remove(name, force=True)  # left over by a crash, if any
            new = self.engine.create(
                name, container.image, container.command, container.env, bindings,
                internal_id=container.internal_id,
            )
        except LightdError:
            self._restart(container, old, stopped)
            raise
        crash_point("rebind.new_created")
        if old is not None:
            try:
                self.engine.remove(old, force=True)
            except LightdError as exc:
                self._undo_new(container, new, old, stopped, exc)
        crash_point("rebind.old_removed")
        if name != container.internal_id:
            try:
                self.engine.rename(new, container.internal_id)
            except LightdError as exc:
                log.error("container %s runs as %s: the engine could not rename it (%s); lightd "
                          "knows it by id", container.internal_id, name, exc.message)
            crash_point("rebind.renamed")
        return new

    def _new_name(self, container: Container) -> str:
        """:func:`rebind_name`, unless the running container still has that name (its last
        rename failed): then the internal_id itself, which is free."""
        temporary = rebind_name(container.internal_id)
        if container.engine_id is None:
            return temporary
        try:
            current = self.engine.inspect(container.engine_id).get("name")
        except LightdError:
            return temporary
        return container.internal_id if current == temporary else temporary

    def _restart(self, container: Container, old: str | None, stopped: bool) -> None:
        if stopped and old is not None:
            try:
                self.engine.start(old)
            except LightdError as exc:
                log.error("container %s could not be restarted: %s",
                          container.internal_id, exc.message)

    def _undo_new(
        self, container: Container, new: str, old: str, stopped: bool, cause: LightdError
    ) -> NoReturn:
        """The old container could not be removed: remove the new one, or say it stays."""
        try:
            self.engine.remove(new, force=True)
        except LightdError as exc:
            log.error("container %s: the rebind failed and its new container %s could not be "
                      "removed (%s); its ports stay held until lightd restarts and removes it",
                      container.internal_id, new, exc.message)
            raise Unavailable(
                f"{cause.message} The new container could not be removed either, so its ports "
                "stay in use; a restart of lightd removes it and reports the ports",
                **{**cause.details, "new_ports_held": True},
            ) from None
        self._restart(container, old, stopped)
        raise cause

    # -- delete ------------------------------------------------------------------------------

    async def delete(self, internal_id: str) -> list[Entry]:
        async with self._lock(internal_id):
            container = self.get(internal_id)
            if container.engine_id is not None:
                # The intent first: a crash once the engine has removed it must not leave a
                # container the engine no longer has (reconcile finishes the delete).
                previous_state, container.state = container.state, "deleting"
                await self.pools.save([put_container(container)])
                crash_point("delete.intent_saved")
                try:
                    await self._engine(self.engine.remove, container.engine_id, True)
                except LightdError:
                    # It may still run and hold the ports: keep them marked.
                    container.state = previous_state
                    await self.pools.save([put_container(container)])
                    raise
                crash_point("delete.engine_removed")
            freed = self._release(self._entries(container.bindings), internal_id)
            del self.containers[internal_id]
            told = {"internal_id": internal_id, "freed": ports_json(freed)}
            await self.pools.save([*map(put_port, freed), DeleteContainer(internal_id)],
                                  [("container.deleted", told)])
        self._locks.pop(internal_id, None)
        return freed

    # -- start-up ----------------------------------------------------------------------------

    async def check_holders(self) -> list[str]:
        """Cross-check the entries' holders with the containers' bindings; repair and report."""
        leases = () if self.leases is None else list(self.leases.leases)
        repairs = self.pools.cross_check(self.containers, leases)
        changed = {r.key for r in repairs if r.holder is not None}
        for repair in repairs:
            log.warning("holder repaired at start-up: %s", repair.problem)
        entries = (self.pools.lookup(key) for key in sorted(changed))
        changes = [put_port(entry) for entry in entries if entry is not None]
        if changes:
            await self.pools.save(changes)
        return [repair.problem for repair in repairs]

    async def reconcile(self) -> dict[str, Any]:
        """Finish or undo what a crash interrupted, and report containers the engine lost."""
        return await container_recovery.reconcile(self)

    # -- ports -------------------------------------------------------------------------------

    def _entries(self, bindings: Sequence[Binding]) -> list[Entry]:
        found = (self.pools.lookup(b.key) for b in bindings)
        return [e for e in found if e is not None]

    def _release(self, entries: Iterable[Entry], internal_id: str) -> list[Entry]:
        """Free the entries among ``entries`` that this container holds, and only those."""
        return self.pools.release(entries, holders.container_holder(internal_id))

    def _claim(
        self, requests: Sequence[PortRequest], internal_id: str
    ) -> tuple[list[Binding], Taken]:
        """Resolve every request and take its entry for the container: all of them, or none.

        Entries the container already holds are kept as they are; entries a lease holds are
        taken from it (core.holders). Runs without yielding.
        """
        holder = holders.container_holder(internal_id)
        bindings: list[Binding] = []
        taken = Taken([], [])
        try:
            for request in requests:
                entry = self._resolve(request)
                if any(b.key == entry.key for b in bindings):
                    raise InvalidInput(f"{entry.label()} is listed twice")
                before = holders.holder_of(entry)
                if self.pools.take(entry, holder):
                    taken.entries.append(entry)
                    taken.before.append(before)
                container_port = request.container_port or entry.port
                bindings.append(Binding(entry.ip, entry.port, entry.protocol, container_port))
        except LightdError:
            self._give_back(taken, internal_id)
            raise
        return bindings, taken

    def _give_back(self, taken: Taken, internal_id: str) -> None:
        """Undo :meth:`_claim`: each entry the container still holds goes back to its holder
        before, or is freed (it was free, or its lease has ended meanwhile)."""
        holder = holders.container_holder(internal_id)
        for entry, before in zip(taken.entries, taken.before, strict=True):
            if before is not None and (self.leases is None or not self.leases.exists(before.name or "")):
                before = None
            self.pools.hand_over(entry, holder, before)

    def _emptied(self, taken: Taken) -> list[Change]:
        """The deletion of the leases the container took the last entries of."""
        return [] if self.leases is None else self.leases.forget_empty(taken.leases())

    def _resolve(self, request: PortRequest) -> Entry:
        """The pool entry a request names, or an available one it asks for."""
        if request.port is None:
            if request.container_port is None:
                raise InvalidInput("a port needs either port (a pool entry) or container_port")
            [chosen] = self.pools.choose(1, (request.protocol,), request.ip)  # NoAvailablePorts
            return chosen
        ip = request.ip or "0.0.0.0"
        entry = self.pools.lookup((ip, request.port, request.protocol))
        if entry is None:
            label = Entry(ip, request.port, request.protocol).label()
            raise Conflict(f"{label} is not in the pool; add it first", port=label)
        return entry


def _engine_error(exc: LightdError) -> LightdError:
    """A host port held by another process is a conflict for the client, not an outage."""
    if isinstance(exc, Unavailable) and exc.details.get("reason") == "port_in_use":
        return Conflict(exc.message, **exc.details)
    return exc
