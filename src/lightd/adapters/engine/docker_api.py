"""The container engine: a Docker Engine API (Docker or Podman) or none at all.

:class:`DockerEngine` drives an engine through the ``docker`` SDK; :class:`NoEngine` keeps the
same books without one (``runtime.kind = "none"``); :func:`detect` picks between them. Every
method is synchronous and may block for seconds: call it from a worker thread.

Every error from the engine or its transport is translated into :class:`~lightd.errors.Unavailable`
(the engine cannot do it now) or :class:`~lightd.errors.NotFound` (the image or container does not
exist), with one sentence for humans and ``details["reason"]`` for code:

``unreachable``, ``timeout``
    the socket does not answer.
``port_in_use``
    a host port of the bindings is held by another socket (checked before start, see below).
``name_in_use``
    another container already has that name.
``start_failed``, ``engine_error``
    the engine refused for another reason; ``details["engine_message"]`` says what it said.
``image_not_found``, ``container_not_found``
    the NotFound cases.

Ports: the engine cannot change the bindings of an existing container, so a rebind creates a
new container. ``create(..., start=False)`` then :meth:`DockerEngine.start` lets the caller see a
failed start and remove what it created. Before starting, :class:`DockerEngine` reads this host's
socket tables and refuses with ``port_in_use``, without asking the engine, when a host port of the
container is held: Podman 4.3 leaks the ports it reserved for the earlier bindings of a container
whose start fails on a later one (they stay bound by the Podman service until it restarts).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict
from urllib.parse import urlsplit

import docker  # type: ignore[import-untyped, unused-ignore]
import docker.errors  # type: ignore[import-untyped, unused-ignore]
import requests.exceptions  # type: ignore[import-untyped, unused-ignore]

from lightd.adapters import host as host_sockets
from lightd.core.containers import Binding
from lightd.core.entry import PROTOCOLS
from lightd.errors import InvalidInput, LightdError, NotFound, Unavailable

__all__ = [
    "LABEL",
    "Binding",
    "ContainerInfo",
    "DockerEngine",
    "NoEngine",
    "RuntimeKind",
    "check_host_ports",
    "detect",
    "socket_url",
]

log = logging.getLogger(__name__)

#: The label every container lightd creates carries; its value is lightd's ``internal_id``.
LABEL = "lightd.internal_id"
RuntimeKind = Literal["auto", "docker", "none"]

# What Docker accepts as a container name.
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,252}$")


class ContainerInfo(TypedDict):
    """What :meth:`inspect` reads back from the engine.

    ``state`` is the engine's (``created``, ``running``, ``exited``, ``paused``, ``restarting``,
    ``removing``, ``dead``), or ``missing`` when the engine has no such container, or
    ``untracked`` from :class:`NoEngine`. ``id`` and ``name`` are empty when missing.
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


# -- shared helpers ---------------------------------------------------------------------------


def socket_url(socket_or_url: str) -> str:
    """``/var/run/docker.sock`` -> ``unix:///var/run/docker.sock``; URLs are kept as they are."""
    value = socket_or_url.strip()
    if not value:
        raise InvalidInput("runtime.socket must name a unix socket path or an engine URL")
    if value.startswith("/"):
        return "unix://" + value
    scheme = urlsplit(value).scheme
    if scheme not in ("unix", "tcp", "http", "https"):
        raise InvalidInput(
            f"runtime.socket must be a socket path or a unix://, tcp:// or http(s):// URL "
            f"(got {socket_or_url!r})"
        )
    return value


def _unix_path(url: str) -> str | None:
    if not url.startswith("unix://"):
        return None
    path = url[len("unix://") :]
    return path if path.startswith("/") else "/" + path


def _check_name(name: str, what: str = "container name") -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            f"the {what} {name!r} is not valid for the container engine: it must start with a "
            "letter or digit and hold only letters, digits, '_', '.' and '-'"
        )


def _canonical_host_ip(value: str) -> str:
    if value in ("", "0.0.0.0"):
        return "0.0.0.0"
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        return value


def engine_host_ip(ip: str) -> str:
    """The ``HostIp`` to send the engine for a binding on ``ip``: the one place that decides it.

    The IPv4 wildcard is sent as ``""``, which is what the docker CLI sends for ``-p 25565:25565``
    and means "every address" to every engine. Sending ``"0.0.0.0"`` works on Docker Engine but
    not on Podman 4.3 (netavark): it becomes the DNAT rule ``-d 0.0.0.0/32``, which no packet
    matches, so the published port accepts connections and never answers. ``""`` is read back
    as ``0.0.0.0`` (see :func:`_canonical_host_ip`). ``::`` is sent as it is: ``""`` would also
    publish on IPv4, where the pool may have given the same port to another container.
    """
    return "" if ip == "0.0.0.0" else ip


def _check_bindings(bindings: Sequence[Binding]) -> list[Binding]:
    seen: set[tuple[str, int, str]] = set()
    out: list[Binding] = []
    for b in bindings:
        if not isinstance(b, Binding):
            raise InvalidInput(f"a binding must be a Binding, not {type(b).__name__}")
        if b.protocol not in PROTOCOLS:
            raise InvalidInput(f"protocol must be tcp or udp (got {b.protocol!r})")
        for field, port in (("host_port", b.host_port), ("container_port", b.container_port)):
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise InvalidInput(f"{field} must be an integer from 1 to 65535 (got {port!r})")
        try:
            ip = str(ipaddress.ip_address(b.host_ip))
        except ValueError:
            raise InvalidInput(f"host_ip is not a valid IP address: {b.host_ip!r}") from None
        key = (ip, b.host_port, b.protocol)
        if key in seen:
            raise InvalidInput(f"the host port {ip}:{b.host_port}/{b.protocol} is bound twice")
        seen.add(key)
        out.append(Binding(ip, b.host_port, b.protocol, b.container_port))
    return out


def check_host_ports(bindings: Iterable[Binding]) -> list[Binding]:
    """Return the bindings whose host port some socket of this host holds right now.

    Reads the kernel's socket tables through :mod:`lightd.adapters.host` (nothing is bound, so
    the check never races a real server for the port). If the tables cannot be read at all,
    nothing is reported busy and the engine's own bind decides.
    """
    wanted = list(bindings)
    if not wanted:
        return []
    ports = [b.host_port for b in wanted]
    try:
        # Only the sockets on these ports' range: a busy host has tens of thousands of others.
        index = host_sockets.snapshot(
            sorted({b.protocol for b in wanted}), ports=(min(ports), max(ports))
        )
    except OSError as exc:
        log.warning("cannot read this host's socket tables (%s); not checking host ports", exc)
        return []
    return [b for b in wanted if index.is_bound(b.host_ip, b.host_port, b.protocol)]


def _describe(bindings: Sequence[Binding]) -> str:
    return ", ".join(f"{b.host_ip}:{b.host_port}/{b.protocol}" for b in bindings)


def _port_in_use(bindings: Sequence[Binding], target: str) -> Unavailable:
    return Unavailable(
        f"Cannot start container {target}: host port {_describe(bindings)} is already bound "
        "by another process.",
        reason="port_in_use",
        ports=[{"ip": b.host_ip, "port": b.host_port, "protocol": b.protocol} for b in bindings],
    )


def _bindings_from(port_bindings: Any) -> list[Binding]:
    """Parse ``HostConfig.PortBindings`` (or ``NetworkSettings.Ports``)."""
    out: list[Binding] = []
    if not isinstance(port_bindings, dict):
        return out
    for key, hosts in port_bindings.items():
        port_text, _, proto = str(key).partition("/")
        try:
            container_port = int(port_text)
        except ValueError:
            continue
        for host in hosts or ():
            if not isinstance(host, dict):
                continue
            try:
                host_port = int(host.get("HostPort") or 0)
            except ValueError:
                host_port = 0
            ip = _canonical_host_ip(str(host.get("HostIp") or ""))
            out.append(Binding(ip, host_port, proto or "tcp", container_port))
    return sorted(out)


def _missing() -> ContainerInfo:
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


# -- Docker Engine API --------------------------------------------------------------------------


class DockerEngine:
    """A Docker Engine API at ``base_url`` (Docker, or Podman's ``podman system service``).

    The client is made on first use, after a plain probe of the socket answers, so a dead engine
    costs no leaked sockets and no waiting at construction. Safe to share between threads.
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
    ) -> None:
        self.base_url = socket_url(base_url)
        self.timeout = timeout
        self.ping_timeout = ping_timeout
        self.stop_timeout = stop_timeout
        self._unix = _unix_path(self.base_url)
        # The pre-start port check is only meaningful when the engine publishes on this host.
        self.check_ports = self._unix is not None if check_ports is None else check_ports
        self._lock = threading.Lock()
        self._api: Any = None
        #: From the engine's ping (unix sockets): API version and ``Server`` header, when known.
        self.api_version: str | None = None
        self.server: str | None = None

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
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(self._unix)
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: localhost\r\n\r\n")
                data = b""
                while len(data) < 65536:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        except FileNotFoundError:
            return f"the socket {self._unix} does not exist"
        except ConnectionRefusedError:
            return f"nothing listens on the socket {self._unix}"
        except PermissionError:
            return f"no permission to use the socket {self._unix}"
        except TimeoutError:
            return f"the socket {self._unix} did not answer within {timeout:g}s"
        except OSError as exc:
            return f"the socket {self._unix} failed: {exc.strerror or exc}"
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split()
        if len(status) < 2 or status[1] != "200" or body.strip() != b"OK":
            return f"the socket {self._unix} does not speak the Docker Engine API"
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        # The ping names the API version, which spares the client its own (slow on Podman)
        # /version round trip.
        self.api_version = headers.get("api-version") or self.api_version
        self.server = headers.get("server") or self.server
        return None

    def _client(self) -> Any:
        with self._lock:
            if self._api is not None:
                return self._api
            if self._unix is not None:
                why = self._probe(self.ping_timeout)
                if why is not None:
                    raise Unavailable(
                        f"The container engine at {self.base_url} is not reachable: {why}.",
                        reason="unreachable",
                        engine=self.base_url,
                    )
            try:
                self._api = docker.APIClient(
                    base_url=self.base_url,
                    version=self.api_version or "auto",
                    timeout=self.timeout,
                )
            except Exception as exc:  # docker.errors.DockerException and transport errors
                raise self._translate(exc, "connect to", self.base_url) from exc
            return self._api

    def _translate(self, exc: BaseException, op: str, target: str) -> LightdError:
        """One sentence for a foreign error; the original stays as ``__cause__``."""
        if isinstance(exc, LightdError):
            return exc
        if isinstance(exc, docker.errors.ImageNotFound):
            return NotFound(
                f"The container engine has no image {target}.",
                reason="image_not_found",
                image=target,
            )
        if isinstance(exc, docker.errors.NotFound):
            return NotFound(
                f"The container engine has no container {target}.",
                reason="container_not_found",
                container=target,
            )
        if isinstance(exc, docker.errors.APIError):
            status = exc.status_code
            message = str(exc.explanation or exc).strip().rstrip(".")
            if "address already in use" in message:
                reason = "port_in_use"
                sentence = f"Cannot {op} container {target}: a host port is already bound"
            elif "already in use" in message or status == 409:
                reason = "name_in_use"
                sentence = f"Cannot {op} container {target}: the name is already in use"
            else:
                reason = "start_failed" if op == "start" else "engine_error"
                sentence = f"The container engine failed to {op} {target}"
            return Unavailable(
                f"{sentence} ({message}).",
                reason=reason,
                engine_status=status,
                engine_message=message,
            )
        if isinstance(exc, requests.exceptions.Timeout):
            return Unavailable(
                f"The container engine at {self.base_url} did not answer within "
                f"{self.timeout:g}s while trying to {op} {target}.",
                reason="timeout",
                engine=self.base_url,
            )
        if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
            return Unavailable(
                f"The container engine at {self.base_url} is not reachable ({exc}).",
                reason="unreachable",
                engine=self.base_url,
            )
        return Unavailable(
            f"The container engine at {self.base_url} failed to {op} {target} ({exc}).",
            reason="engine_error",
            engine=self.base_url,
        )

    def _call(self, op: str, target: str, fn: str, *args: Any, **kwargs: Any) -> Any:
        api = self._client()
        try:
            return getattr(api, fn)(*args, **kwargs)
        except Exception as exc:
            raise self._translate(exc, op, target) from exc

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
        _check_name(name)
        if internal_id is None:
            internal_id = name
        checked = _check_bindings(bindings)
        if start and self.check_ports:
            self._client()  # an unreachable engine says so before a busy port does
            self._refuse_busy(checked, name)  # before anything is created
        port_bindings: dict[str, list[tuple[str, int]]] = {}
        for b in checked:
            port_bindings.setdefault(b.port_key, []).append(
                (engine_host_ip(b.host_ip), b.host_port)
            )
        exposed = sorted({(b.container_port, b.protocol) for b in checked})
        api = self._client()
        try:
            host_config = api.create_host_config(port_bindings=port_bindings)
            created = api.create_container(
                image,
                command=command if command is None or isinstance(command, str) else list(command),
                name=name,
                environment=[f"{k}={v}" for k, v in (env or {}).items()],
                labels={LABEL: internal_id},
                ports=exposed,
                host_config=host_config,
                detach=True,
            )
        except docker.errors.ImageNotFound as exc:
            raise self._translate(exc, "create", image) from exc
        except Exception as exc:
            raise self._translate(exc, "create", name) from exc
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
            busy = check_host_ports(bindings)
            if busy:
                raise _port_in_use(busy, target)

    def start(self, engine_id: str) -> None:
        """Start a created or stopped container; a running one is left as it is.

        Raises Unavailable with reason ``port_in_use`` when one of its host ports is bound by
        another process (the container is left created, not removed).
        """
        info = self.inspect(engine_id)
        if info["state"] == "missing":
            raise NotFound(
                f"The container engine has no container {engine_id}.",
                reason="container_not_found",
                container=engine_id,
            )
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
            api.remove_container(engine_id, force=force, v=True)
        except docker.errors.NotFound:
            return
        except Exception as exc:
            raise self._translate(exc, "remove", engine_id) from exc

    def rename(self, engine_id: str, new_name: str) -> None:
        """Give a container a new name (its id and label stay). Works on Podman 4.3 and Docker."""
        _check_name(new_name, "new container name")
        self._call("rename", engine_id, "rename", engine_id, new_name)

    def inspect(self, engine_id_or_name: str) -> ContainerInfo:
        """Read a container back; state ``missing`` when the engine does not have it.

        An engine that does not answer raises Unavailable: it is never reported as missing.
        """
        api = self._client()
        try:
            attrs = api.inspect_container(engine_id_or_name)
        except docker.errors.NotFound:
            return _missing()
        except Exception as exc:
            raise self._translate(exc, "inspect", engine_id_or_name) from exc
        return self._info(attrs)

    @staticmethod
    def _info(attrs: Any) -> ContainerInfo:
        state = attrs.get("State") or {}
        config = attrs.get("Config") or {}
        host_config = attrs.get("HostConfig") or {}
        labels = config.get("Labels") or {}
        bindings = _bindings_from(host_config.get("PortBindings"))
        if not bindings:
            bindings = _bindings_from((attrs.get("NetworkSettings") or {}).get("Ports"))
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


# -- no engine -----------------------------------------------------------------------------------


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
        _check_name(name)
        checked = _check_bindings(bindings)
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
        _check_name(new_name, "new container name")
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
                info = self._by_name[name]
                return ContainerInfo(**{**info, "bindings": list(info["bindings"])})
        name = engine_id_or_name.removeprefix("none-")
        return ContainerInfo(
            id=engine_id_or_name if engine_id_or_name.startswith("none-") else f"none-{name}",
            name=name,
            internal_id=None,
            state="untracked",
            running=False,
            image="",
            bindings=[],
            exit_code=None,
            error="",
        )

    def list_managed(self) -> list[ContainerInfo]:
        with self._lock:
            infos = [
                ContainerInfo(**{**i, "bindings": list(i["bindings"])})
                for i in self._by_name.values()
            ]
        return sorted(infos, key=lambda i: (i["internal_id"] or "", i["name"]))

    def close(self) -> None:
        return None


# -- choosing one --------------------------------------------------------------------------------


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
