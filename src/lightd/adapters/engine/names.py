"""Names the engine adapter deals in: lightd's label, container names, the engine's address."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from lightd.errors import InvalidInput

__all__ = ["LABEL", "RuntimeKind", "check_name", "socket_url", "unix_path"]

#: The label every container lightd creates carries; its value is lightd's ``internal_id``.
LABEL = "lightd.internal_id"
RuntimeKind = Literal["auto", "docker", "none"]

# What Docker accepts as a container name.
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,252}$")


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


def unix_path(url: str) -> str | None:
    """The socket path of a ``unix://`` URL; None for any other scheme."""
    if not url.startswith("unix://"):
        return None
    path = url[len("unix://") :]
    return path if path.startswith("/") else "/" + path


def check_name(name: str, what: str = "container name") -> None:
    """Refuse, before the engine does, a name the engine would refuse."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            f"the {what} {name!r} is not valid for the container engine: it must start with a "
            "letter or digit and hold only letters, digits, '_', '.' and '-'"
        )
