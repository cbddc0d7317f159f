"""``runtime.kind = "none"``: the engine's books kept without an engine."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from lightd.adapters.engine.bindings import check_bindings
from lightd.adapters.engine.names import check_name
from lightd.core.containers import Binding
from lightd.core.engine_view import ContainerInfo, missing
from lightd.errors import NotFound, Unavailable

__all__ = ["NoEngine"]


class NoEngine:
    """``runtime.kind = "none"``: bookkeeping only, nothing runs.

    Creates return ``none-<name>``; :meth:`inspect` always reports state ``untracked`` (never
    ``missing``: there is no engine that could lose a container, and this memory does not
    survive a restart), with the bindings given at create if this process remembers them.
    """

    kind = "none"

    def __init__(self, reason: str = "runtime.kind is none") -> None:
        self.reason = reason
        self._lock = threading.Lock()
        self._by_name: dict[str, ContainerInfo] = {}

    def __repr__(self) -> str:
        return "NoEngine()"

    def __enter__(self) -> NoEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> bool:
        """Always True: bookkeeping is always available (``kind`` says there is no engine)."""
        return True

    def version(self) -> str:
        return "none"

    def _find(self, engine_id_or_name: str) -> str | None:
        if engine_id_or_name in self._by_name:
            return engine_id_or_name
        for name, info in self._by_name.items():
            if info["id"] == engine_id_or_name:
                return name
        return None

    def create(
        self,
        name: str,
        image: str,
        command: Sequence[str] | str | None = None,
        env: Mapping[str, str] | None = None,
        bindings: Sequence[Binding] = (),
        start: bool = True,
        *,
        internal_id: str | None = None,
    ) -> str:
        check_name(name)
        checked = check_bindings(bindings)
        with self._lock:
            if name in self._by_name:
                raise Unavailable(
                    f"Cannot create container {name}: the name is already in use.",
                    reason="name_in_use",
                )
            engine_id = f"none-{name}"
            self._by_name[name] = ContainerInfo(
                id=engine_id,
                name=name,
                internal_id=name if internal_id is None else internal_id,
                state="untracked",
                running=False,
                image=image,
                bindings=sorted(checked),
                exit_code=None,
                error="",
            )
        return engine_id

    def start(self, engine_id: str) -> None:
        return None

    def stop(self, engine_id: str, timeout: int | None = None) -> None:
        return None

    def remove(self, engine_id: str, force: bool = True) -> None:
        with self._lock:
            name = self._find(engine_id)
            if name is not None:
                del self._by_name[name]

    def rename(self, engine_id: str, new_name: str) -> None:
        check_name(new_name, "new container name")
        with self._lock:
            name = self._find(engine_id)
            if name is None:
                raise NotFound(
                    f"No container {engine_id} is known to this lightd.",
                    reason="container_not_found",
                    container=engine_id,
                )
            if new_name != name and new_name in self._by_name:
                raise Unavailable(
                    f"Cannot rename container {engine_id}: the name {new_name} is in use.",
                    reason="name_in_use",
                )
            info = self._by_name.pop(name)
            info["name"] = new_name
            self._by_name[new_name] = info

    def inspect(self, engine_id_or_name: str) -> ContainerInfo:
        with self._lock:
            name = self._find(engine_id_or_name)
            if name is not None:
                return _copy(self._by_name[name])
        name = engine_id_or_name.removeprefix("none-")
        return ContainerInfo(**{**missing(), "id": f"none-{name}", "name": name, "state": "untracked"})

    def list_managed(self) -> list[ContainerInfo]:
        with self._lock:
            infos = [_copy(i) for i in self._by_name.values()]
        return sorted(infos, key=lambda i: (i["internal_id"] or "", i["name"]))

    def close(self) -> None:
        return None


def _copy(info: ContainerInfo) -> ContainerInfo:
    """A copy the caller may change without touching this memory."""
    return ContainerInfo(**{**info, "bindings": list(info["bindings"])})
