"""A container as a container engine reports it: the shape every engine adapter returns.

It lives in core, not next to the Docker client, so that the service's ``Engine`` Protocol and the
fakes of the tests can name it without importing an adapter.
"""

from __future__ import annotations

from typing import TypedDict

from lightd.core.containers import Binding

__all__ = ["ContainerInfo", "missing"]


class ContainerInfo(TypedDict):
    """What an engine's ``inspect`` reads back (and ``list_managed`` lists).

    ``state`` is the engine's (``created``, ``running``, ``exited``, ``paused``, ``restarting``,
    ``removing``, ``dead``), or ``missing`` when the engine has no such container, or
    ``untracked`` from the bookkeeping-only engine. ``id`` and ``name`` are empty when missing.
    ``internal_id`` is the value of lightd's label, None on a container lightd did not make.
    ``bindings`` are the published ports the engine holds for the container (its
    ``HostConfig.PortBindings``), sorted.
    """

    id: str
    name: str
    internal_id: str | None
    state: str
    running: bool
    image: str
    bindings: list[Binding]
    exit_code: int | None
    error: str


def missing() -> ContainerInfo:
    """The answer for a container the engine does not have."""
    return ContainerInfo(
        id="",
        name="",
        internal_id=None,
        state="missing",
        running=False,
        image="",
        bindings=[],
        exit_code=None,
        error="",
    )
