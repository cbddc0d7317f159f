"""Containers as lightd keeps them: what to run, and which pool entries it publishes."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from lightd.core.entry import Key
from lightd.errors import InvalidInput, quoted

__all__ = ["MAX_INTERNAL_ID", "Binding", "Container", "parse_internal_id", "rebind_name"]

MAX_INTERNAL_ID = 128
# The engine's own rule for names, so an internal_id is always a valid container name.
_INTERNAL_ID = re.compile(rf"^[a-zA-Z0-9][a-zA-Z0-9_.-]{{0,{MAX_INTERNAL_ID - 1}}}$")


def parse_internal_id(value: Any, field: str = "internal_id") -> str:
    # fullmatch: "$" alone would let a trailing newline through.
    if not isinstance(value, str) or not _INTERNAL_ID.fullmatch(value):
        raise InvalidInput(
            f"{field} must be 1 to 128 letters, digits, '_', '.' or '-', starting with a letter "
            f"or digit (got {quoted(value)})"
        )
    return value


def rebind_name(internal_id: str) -> str:
    """The engine name of a rebind's new container until it takes over ``internal_id``'s name.

    It is longer than any internal_id can be, so it is never the name of another container
    lightd manages (``mc.rebind`` is a valid internal_id, so a plain suffix could collide). It
    starts with the internal_id so ``docker ps`` shows whose it is, and the digest after
    ``.rebind-`` holds no '.' or '-', so no two internal_ids share one.
    """
    prefix = f"{internal_id}.rebind-"
    digest = hashlib.sha256(internal_id.encode()).hexdigest()
    return (prefix + digest + digest)[: max(MAX_INTERNAL_ID + 1, len(prefix) + 16)]


@dataclass(frozen=True, order=True)
class Binding:
    """One published port: ``host_ip:host_port/protocol`` on the host to ``container_port``."""

    host_ip: str
    host_port: int
    protocol: str
    container_port: int

    @property
    def key(self) -> Key:
        """The pool entry this binding uses."""
        return (self.host_ip, self.host_port, self.protocol)

    @property
    def port_key(self) -> str:
        """The engine's name of the container side, e.g. ``"8080/tcp"``."""
        return f"{self.container_port}/{self.protocol}"


@dataclass
class Container:
    """A container and its bindings.

    ``state`` is lightd's own: ``creating`` and ``rebinding`` while a change is under way (a
    crash then is repaired at the next start), ``running`` once the engine runs it, ``missing``
    when the engine lost it. ``pending`` holds the new bindings during a rebind.
    """

    internal_id: str
    image: str
    command: list[str] | str | None = None
    env: dict[str, str] = field(default_factory=dict)
    bindings: list[Binding] = field(default_factory=list)
    engine_id: str | None = None
    state: str = "creating"
    pending: list[Binding] | None = None

    def keys(self) -> set[Key]:
        return {b.key for b in self.bindings}

    def public_json(self) -> dict[str, Any]:
        """What clients are shown of it (answers, events): the env's names, never its values,
        which often hold passwords (RCON, databases)."""
        return {
            "internal_id": self.internal_id,
            "image": self.image,
            "state": self.state,
            "engine_id": self.engine_id,
            "startup_command": self.command,
            "env": sorted(self.env),
            "ports": [
                {"ip": b.host_ip, "port": b.host_port, "protocol": b.protocol,
                 "container_port": b.container_port}
                for b in self.bindings
            ],
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "internal_id": self.internal_id,
            "image": self.image,
            "command": self.command,
            "env": self.env,
            "bindings": [_binding_json(b) for b in self.bindings],
            "engine_id": self.engine_id,
            "state": self.state,
            "pending": None if self.pending is None else [_binding_json(b) for b in self.pending],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Container:
        pending = data.get("pending")
        return cls(
            internal_id=data["internal_id"],
            image=data["image"],
            command=data.get("command"),
            env=dict(data.get("env") or {}),
            bindings=[Binding(*b) for b in data.get("bindings", [])],
            engine_id=data.get("engine_id"),
            state=data.get("state", "running"),
            pending=None if pending is None else [Binding(*b) for b in pending],
        )


def _binding_json(binding: Binding) -> list[Any]:
    return [binding.host_ip, binding.host_port, binding.protocol, binding.container_port]
