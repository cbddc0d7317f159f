"""A Docker Engine API (Docker, or Podman's ``podman system service``) through the ``docker`` SDK.

Ports: the engine cannot change the bindings of an existing container, so a rebind creates a
new container. ``create(..., start=False)`` then :meth:`DockerEngine.start` lets the caller see a
failed start and remove what it created. Before starting, :class:`DockerEngine` reads this host's
socket tables and refuses with ``port_in_use``, without asking the engine, when a host port of the
container is held: Podman 4.3 leaks the ports it reserved for the earlier bindings of a container
whose start fails on a later one (they stay bound by the Podman service until it restarts).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import docker  # type: ignore[import-untyped, unused-ignore]
import docker.errors  # type: ignore[import-untyped, unused-ignore]

from lightd.adapters.engine import probe
from lightd.adapters.engine.bindings import check_bindings, exposed_ports, parse_port_bindings, port_bindings
from lightd.adapters.engine.errors import (
    Call,
    container_not_found,
    ipv6_unreachable,
    port_in_use,
    translating,
    unreachable,
)
from lightd.adapters.engine.flavour import Flavour, read_flavour
from lightd.adapters.engine.host_ports import HostTable, check_host_ports
from lightd.adapters.engine.names import LABEL, check_name, socket_url, unix_path
from lightd.core.containers import Binding
from lightd.core.engine_view import ContainerInfo, missing
from lightd.errors import LightdError, NotFound

__all__ = ["DockerEngine", "container_info"]

log = logging.getLogger(__name__)


class DockerEngine:
    """A Docker Engine API at ``base_url`` (Docker, or Podman's ``podman system service``).

    The client is made on first use, after a plain probe of the socket answers, so a dead engine
    costs no leaked sockets and no waiting at construction. Safe to share between threads.
    ``host`` is where the pre-start port check reads the socket tables (this host's by default).
    """

    kind = "docker"

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        ping_timeout: float = 3.0,
        stop_timeout: int = 10,
        check_ports: bool | None = None,
        host: HostTable | None = None,
    ) -> None:
        self.base_url = socket_url(base_url)
        self.timeout = timeout
        self.ping_timeout = ping_timeout
        self.stop_timeout = stop_timeout
        self._unix = unix_path(self.base_url)
        # The pre-start port check is only meaningful when the engine publishes on this host.
        self.check_ports = self._unix is not None if check_ports is None else check_ports
        self.host = host
        self._lock = threading.Lock()
        self._api: Any = None
        #: From the engine's ping (unix sockets): API version and ``Server`` header, when known.
        self.api_version: str | None = None
        self.server: str | None = None
        self._flavour: Flavour | None = None

    def __repr__(self) -> str:
        return f"DockerEngine({self.base_url!r})"

    def __enter__(self) -> DockerEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _probe(self, timeout: float) -> str | None:
        """Ask ``/_ping`` over the unix socket with a socket we own; None if fine, else why not."""
        assert self._unix is not None
        answer = probe.ping(self._unix, timeout)
        if answer.why_not is None:
            self.api_version = answer.api_version or self.api_version
            self.server = answer.server or self.server
        return answer.why_not

    def _client(self) -> Any:
        with self._lock:
            if self._api is not None:
                return self._api
            if self._unix is not None:
                why = self._probe(self.ping_timeout)
                if why is not None:
                    raise unreachable(self.base_url, why)
            with self._translating("connect to", self.base_url):
                self._api = docker.APIClient(
                    base_url=self.base_url,
                    version=self.api_version or "auto",
                    timeout=self.timeout,
                )
            return self._api

    def flavour(self) -> Flavour:
        """Which engine this is, as far as published ports differ; asked once, then kept."""
        api = self._client()
        if self._flavour is None:
            with self._translating("inspect", "the engine's network"):
                self._flavour = read_flavour(api, self.server)
        return self._flavour

    def _translating(self, op: str, target: str, image: str | None = None) -> translating:
        return translating(Call(op, target, self.base_url, self.timeout, image))

    def _call(self, op: str, target: str, fn: str, *args: Any, **kwargs: Any) -> Any:
        api = self._client()
        with self._translating(op, target):
            return getattr(api, fn)(*args, **kwargs)

    # -- the engine API ---------------------------------------------------------------------

    def diagnose(self) -> str | None:
        """None when the engine answers a ping now, else why not (half a sentence)."""
        if self._unix is not None:
            return self._probe(self.ping_timeout)
        try:
            return None if self._call("ping", self.base_url, "ping") else "the ping failed"
        except LightdError as exc:
            return exc.message.rstrip(".")

    def ping(self) -> bool:
        """Whether the engine answers now. Never raises."""
        return self.diagnose() is None

    def version(self) -> str:
        """The engine's version, e.g. ``"4.3.1"`` for Podman."""
        info = self._call("ask the version of", "the engine", "version")
        return str(info.get("Version", "")) if isinstance(info, dict) else ""

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
        """Create a container publishing exactly ``bindings``; return its engine id.

        It carries the label ``lightd.internal_id=<internal_id or name>`` (pass ``internal_id``
        when creating under a temporary name). With ``start`` it is started too, and if that
        fails it is removed again before the error is raised, so nothing is left behind. A host
        port already bound by another process fails with reason ``port_in_use`` before anything
        is created.
        """
        check_name(name)
        if internal_id is None:
            internal_id = name
        checked = check_bindings(bindings)
        flavour = self.flavour()  # an unreachable engine says so before a busy port does
        ipv6 = [b for b in checked if ":" in b.host_ip]
        if ipv6 and not flavour.ipv6:
            raise ipv6_unreachable(ipv6, name)
        if start and self.check_ports:
            self._refuse_busy(checked, name)  # before anything is created
        api = self._client()
        with self._translating("create", name, image=image):
            host_config = api.create_host_config(port_bindings=port_bindings(checked, podman=flavour.podman))
            created = api.create_container(
                image,
                command=command if command is None or isinstance(command, str) else list(command),
                name=name,
                environment=[f"{k}={v}" for k, v in (env or {}).items()],
                labels={LABEL: internal_id},
                ports=exposed_ports(checked),
                host_config=host_config,
                detach=True,
            )
        engine_id = str(created["Id"])
        if start:
            try:
                self._start(engine_id, name, checked)
            except LightdError:
                try:
                    self.remove(engine_id, force=True)
                except LightdError as cleanup:
                    log.warning(
                        "container %s (%s) failed to start and could not be removed: %s",
                        name,
                        engine_id,
                        cleanup.message,
                    )
                raise
        return engine_id

    def _start(self, engine_id: str, target: str, bindings: Sequence[Binding]) -> None:
        self._refuse_busy(bindings, target)  # again: Podman leaks ports when a start fails
        self._call("start", target, "start", engine_id)

    def _refuse_busy(self, bindings: Sequence[Binding], target: str) -> None:
        if self.check_ports:
            busy = check_host_ports(bindings, self.host)
            if busy:
                raise port_in_use(busy, target)

    def start(self, engine_id: str) -> None:
        """Start a created or stopped container; a running one is left as it is.

        Raises Unavailable with reason ``port_in_use`` when one of its host ports is bound by
        another process (the container is left created, not removed).
        """
        info = self.inspect(engine_id)
        if info["state"] == "missing":
            raise container_not_found(engine_id)
        if info["running"]:
            return
        self._start(info["id"], info["name"] or engine_id, info["bindings"])

    def stop(self, engine_id: str, timeout: int | None = None) -> None:
        """Stop a container (SIGTERM, SIGKILL after ``timeout`` seconds); frees its host ports."""
        t = self.stop_timeout if timeout is None else timeout
        self._call("stop", engine_id, "stop", engine_id, timeout=t)

    def remove(self, engine_id: str, force: bool = True) -> None:
        """Remove a container (killing it with ``force``). A missing container is not an error."""
        api = self._client()
        try:
            with self._translating("remove", engine_id):
                api.remove_container(engine_id, force=force, v=True)
        except NotFound as exc:
            if exc.details.get("reason") != "container_not_found":
                raise

    def rename(self, engine_id: str, new_name: str) -> None:
        """Give a container a new name (its id and label stay). Works on Podman 4.3 and Docker."""
        check_name(new_name, "new container name")
        self._call("rename", engine_id, "rename", engine_id, new_name)

    def inspect(self, engine_id_or_name: str) -> ContainerInfo:
        """Read a container back; state ``missing`` when the engine does not have it.

        An engine that does not answer raises Unavailable: it is never reported as missing.
        """
        api = self._client()
        try:
            with self._translating("inspect", engine_id_or_name):
                attrs = api.inspect_container(engine_id_or_name)
        except NotFound as exc:
            if exc.details.get("reason") != "container_not_found":
                raise
            return missing()
        return container_info(attrs)

    def list_managed(self) -> list[ContainerInfo]:
        """Every container (running or not) carrying lightd's label, sorted by internal_id."""
        rows = self._call("list", "containers", "containers", all=True, filters={"label": LABEL})
        out: list[ContainerInfo] = []
        for row in rows or ():
            info = self.inspect(str(row["Id"]))
            if info["state"] != "missing" and info["internal_id"] is not None:
                out.append(info)
        out.sort(key=lambda i: (i["internal_id"] or "", i["name"]))
        return out

    def close(self) -> None:
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            api.close()


def container_info(attrs: Any) -> ContainerInfo:
    """An ``inspect_container`` answer as lightd reads it."""
    state = attrs.get("State") or {}
    config = attrs.get("Config") or {}
    host_config = attrs.get("HostConfig") or {}
    labels = config.get("Labels") or {}
    bindings = parse_port_bindings(host_config.get("PortBindings"))
    if not bindings:
        bindings = parse_port_bindings((attrs.get("NetworkSettings") or {}).get("Ports"))
    exit_code = state.get("ExitCode")
    return ContainerInfo(
        id=str(attrs.get("Id", "")),
        name=str(attrs.get("Name", "")).lstrip("/"),
        internal_id=labels.get(LABEL),
        state=str(state.get("Status") or "unknown"),
        running=bool(state.get("Running")),
        image=str(config.get("Image") or attrs.get("Image") or ""),
        bindings=bindings,
        exit_code=exit_code if isinstance(exit_code, int) else None,
        error=str(state.get("Error") or ""),
    )
