"""The engine's errors as lightd's: one table from foreign exceptions to reasons and sentences.

The ``docker`` SDK and ``requests`` below it fail with their own exceptions; the engine itself
often says what went wrong only in text (``... bind: address already in use``). Every call into
the SDK runs inside :class:`translating`, which looks the exception up in :data:`TABLE` and raises
the :class:`~lightd.errors.LightdError` it names, the original kept as ``__cause__``.

The lookup, as httpx maps httpcore's exceptions: the most specific class of the exception that
the table names wins (its ``__mro__`` is walked in order, so ``ImageNotFound`` beats
``NotFound``, which beats ``APIError``); that class's rules are tried in order and the first one
whose conditions all hold decides. Every class's last rule has no condition, and ``Exception``
is in the table, so every exception gets an answer. :data:`REASONS` lists every reason the
adapter gives; the errors lightd raises on its own account (:func:`unreachable`,
:func:`port_in_use`, :func:`container_not_found`, :func:`ipv6_unreachable`) use the same reasons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import docker.errors  # type: ignore[import-untyped, unused-ignore]
import requests.exceptions  # type: ignore[import-untyped, unused-ignore]

from lightd.adapters.engine.bindings import describe
from lightd.core.containers import Binding
from lightd.errors import Conflict, LightdError, NotFound, Unavailable

__all__ = [
    "REASONS",
    "TABLE",
    "Call",
    "Rule",
    "container_not_found",
    "ipv6_unreachable",
    "port_in_use",
    "translate",
    "translating",
    "unreachable",
]

#: Every ``details["reason"]`` the engine adapter gives, for code to tell failures apart.
REASONS = (
    "unreachable",  # the socket does not answer
    "timeout",  # it answered the connection but not the request in time
    "port_in_use",  # a host port of the bindings is held by another socket
    "ipv6_unreachable",  # an IPv6 host port on an engine whose network cannot forward it
    "name_in_use",  # another container already has that name
    "start_failed",  # the engine refused to start it, for another reason
    "engine_error",  # the engine refused anything else
    "image_not_found",
    "container_not_found",
)


@dataclass(frozen=True)
class Call:
    """What was under way when an error came; the sentences are written from it."""

    op: str  # a verb: "create", "start", "remove", ...
    target: str  # a container name or id, or what else the call was about
    engine: str  # the engine's URL
    timeout: float  # seconds the client waits for an answer
    image: str | None = None  # the image a create names


@dataclass(frozen=True)
class Rule:
    """One line of the table: when it applies, and the error it makes.

    ``sentence`` is a :meth:`str.format` template over the facts of :func:`_facts`; ``details``
    names the facts copied into the error's details (besides ``reason``). A rule applies when
    the engine's message contains ``contains``, its HTTP status is ``status`` and the call was
    ``op``, each where given.
    """

    reason: str
    sentence: str
    error: type[LightdError] = Unavailable
    details: tuple[str, ...] = ()
    contains: str | None = None
    status: int | None = None
    op: str | None = None

    def applies(self, facts: Mapping[str, Any]) -> bool:
        return (
            (self.contains is None or self.contains in facts["engine_message"])
            and (self.status is None or self.status == facts["engine_status"])
            and (self.op is None or self.op == facts["op"])
        )

    def make(self, facts: Mapping[str, Any]) -> LightdError:
        details = {name: facts[name] for name in self.details}
        return self.error(self.sentence.format(**facts), reason=self.reason, **details)


_ENGINE = ("engine",)
_ANSWER = ("engine_status", "engine_message")  # what the engine said, for code and logs
_IMAGE_NOT_FOUND = Rule("image_not_found", "The container engine has no image {image}.", NotFound, ("image",))
_CONTAINER_NOT_FOUND = Rule(
    "container_not_found",
    "The container engine has no container {target}.",
    NotFound,
    ("container",),
)
_TIMEOUT = Rule(
    "timeout",
    "The container engine at {engine} did not answer within {timeout:g}s while trying to {op} {target}.",
    details=_ENGINE,
)
_UNREACHABLE = Rule(
    "unreachable", "The container engine at {engine} is not reachable ({exc}).", details=_ENGINE
)

#: Foreign exception class -> its rules, most specific condition first.
TABLE: Mapping[type[BaseException], tuple[Rule, ...]] = {
    docker.errors.ImageNotFound: (_IMAGE_NOT_FOUND,),
    docker.errors.NotFound: (_CONTAINER_NOT_FOUND,),
    docker.errors.APIError: (
        # Podman answers 500, not 404, for a container removed while it was being looked up
        # (e.g. between a list and an inspect): it is gone all the same.
        Rule(
            _CONTAINER_NOT_FOUND.reason,
            _CONTAINER_NOT_FOUND.sentence,
            NotFound,
            _CONTAINER_NOT_FOUND.details,
            contains="no such container",
        ),
        # Before "already in use": the engine's bind failed, not its choice of name.
        Rule(
            "port_in_use",
            "Cannot {op} container {target}: a host port is already bound ({engine_message}).",
            details=_ANSWER,
            contains="address already in use",
        ),
        Rule(
            "name_in_use",
            "Cannot {op} container {target}: the name is already in use ({engine_message}).",
            details=_ANSWER,
            contains="already in use",
        ),
        Rule(
            "name_in_use",
            "Cannot {op} container {target}: the name is already in use ({engine_message}).",
            details=_ANSWER,
            status=409,
        ),
        Rule(
            "start_failed",
            "The container engine failed to {op} {target} ({engine_message}).",
            details=_ANSWER,
            op="start",
        ),
        Rule(
            "engine_error",
            "The container engine failed to {op} {target} ({engine_message}).",
            details=_ANSWER,
        ),
    ),
    # A ConnectTimeout is a ConnectionError first and a Timeout second (its __mro__): named
    # here, it counts as what it says, the engine not answering in time.
    requests.exceptions.ConnectTimeout: (_TIMEOUT,),
    requests.exceptions.Timeout: (_TIMEOUT,),
    requests.exceptions.ConnectionError: (_UNREACHABLE,),
    ConnectionError: (_UNREACHABLE,),
    Exception: (
        Rule(
            "engine_error",
            "The container engine at {engine} failed to {op} {target} ({exc}).",
            details=_ENGINE,
        ),
    ),
}


def _facts(exc: BaseException, call: Call) -> dict[str, Any]:
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code
        message = str(exc.explanation or exc).strip().rstrip(".")
    else:
        status, message = None, str(exc)
    return {
        "op": call.op,
        "target": call.target,
        "engine": call.engine,
        "timeout": call.timeout,
        "image": call.target if call.image is None else call.image,
        "container": call.target,
        "engine_status": status,
        "engine_message": message,
        "exc": exc,
    }


def translate(exc: BaseException, call: Call) -> LightdError:
    """The LightdError for ``exc`` by :data:`TABLE`; a LightdError is returned as it is."""
    if isinstance(exc, LightdError):
        return exc
    facts = _facts(exc, call)
    for cls in type(exc).__mro__:
        for rule in TABLE.get(cls, ()):
            if rule.applies(facts):
                return rule.make(facts)
    return TABLE[Exception][-1].make(facts)  # a BaseException that is no Exception


class translating:  # lowercase like contextlib.suppress: read as `with translating(...)`
    """``with translating(call):`` raises the translation of any exception from inside it."""

    def __init__(self, call: Call) -> None:
        self.call = call

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Only Exceptions: KeyboardInterrupt and the like go up as they are.
        if isinstance(exc, Exception) and not isinstance(exc, LightdError):
            raise translate(exc, self.call) from exc


# -- errors lightd raises on its own account ---------------------------------------------------


def unreachable(engine: str, why: str) -> Unavailable:
    """The engine's socket failed lightd's own probe (``why``: half a sentence)."""
    return Unavailable(
        f"The container engine at {engine} is not reachable: {why}.",
        reason="unreachable",
        engine=engine,
    )


def container_not_found(target: str) -> LightdError:
    """The engine has no such container (as the engine's own 404 says it)."""
    return _CONTAINER_NOT_FOUND.make({"target": target, "container": target})


def port_in_use(bindings: Sequence[Binding], target: str) -> Unavailable:
    """lightd's pre-start check found these host ports held by another socket."""
    return Unavailable(
        f"Cannot start container {target}: host port {describe(bindings)} is already bound "
        "by another process.",
        reason="port_in_use",
        ports=_ports(bindings),
    )


def ipv6_unreachable(bindings: Sequence[Binding], target: str) -> Conflict:
    """Refused before anything is made: the engine would publish these ports and never answer.

    A Conflict (409): the request is well formed, but this engine cannot serve it as it is set up.
    """
    return Conflict(
        f"Cannot publish container {target} on {describe(bindings)}: this Podman's default network "
        "has no IPv6, so the port would accept connections and never answer them. Use an IPv4 "
        "entry such as 0.0.0.0, or enable IPv6 on Podman's network.",
        reason="ipv6_unreachable",
        ports=_ports(bindings),
    )


def _ports(bindings: Sequence[Binding]) -> list[dict[str, Any]]:
    """The bindings' host ports as an error's ``details["ports"]`` names them."""
    return [{"ip": b.host_ip, "port": b.host_port, "protocol": b.protocol} for b in bindings]
