"""The container engine: a Docker Engine API (Docker or Podman) or none at all.

:class:`DockerEngine` drives an engine through the ``docker`` SDK; :class:`NoEngine` keeps the
same books without one (``runtime.kind = "none"``); :func:`detect` picks between them. Every
method is synchronous and may block for seconds: call it from a worker thread. Both satisfy the
service's ``Engine`` Protocol and answer with :class:`~lightd.core.engine_view.ContainerInfo`.

Every error from the engine or its transport is translated, through the one table of
:mod:`~lightd.adapters.engine.errors`, into :class:`~lightd.errors.Unavailable` (the engine cannot
do it now) or :class:`~lightd.errors.NotFound` (the image or container does not exist), with one
sentence for humans and ``details["reason"]`` for code:

``unreachable``, ``timeout``
    the socket does not answer.
``port_in_use``
    a host port of the bindings is held by another socket (checked before start, see
    :mod:`~lightd.adapters.engine.docker_api`).
``ipv6_unreachable``
    an IPv6 host port on Podman whose network has no IPv6 (it would accept and never answer);
    a :class:`~lightd.errors.Conflict`, refused before anything is created (see
    :mod:`~lightd.adapters.engine.flavour`).
``name_in_use``
    another container already has that name.
``start_failed``, ``engine_error``
    the engine refused for another reason; ``details["engine_message"]`` says what it said.
``image_not_found``, ``container_not_found``
    the NotFound cases.

One concern a module: :mod:`.names` (label, container names, the socket's URL), :mod:`.bindings`
(published ports both ways, and the ``HostIp`` sent), :mod:`.errors` (the translation),
:mod:`.host_ports` (the pre-start check of the host's sockets), :mod:`.probe` (the socket's
ping), :mod:`.flavour` (Podman or Docker, where published ports differ), :mod:`.docker_api`,
:mod:`.none` and :mod:`.detect`.
"""

from lightd.adapters.engine.bindings import engine_host_ip
from lightd.adapters.engine.detect import detect
from lightd.adapters.engine.docker_api import DockerEngine
from lightd.adapters.engine.host_ports import HostTable, check_host_ports
from lightd.adapters.engine.names import LABEL, RuntimeKind, socket_url
from lightd.adapters.engine.none import NoEngine
from lightd.core.containers import Binding
from lightd.core.engine_view import ContainerInfo

__all__ = [
    "LABEL",
    "Binding",
    "ContainerInfo",
    "DockerEngine",
    "HostTable",
    "NoEngine",
    "RuntimeKind",
    "check_host_ports",
    "detect",
    "engine_host_ip",
    "socket_url",
]
