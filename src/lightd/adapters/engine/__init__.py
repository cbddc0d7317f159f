"""The container engine (being split into modules of one concern; for now all in docker_api)."""

from lightd.adapters.engine.docker_api import (
    LABEL,
    Binding,
    ContainerInfo,
    DockerEngine,
    NoEngine,
    RuntimeKind,
    check_host_ports,
    detect,
    socket_url,
)

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
