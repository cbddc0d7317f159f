"""Which engine answers the Docker Engine API, where the difference changes what lightd sends.

Two differences matter, both about published ports (see :func:`~.bindings.engine_host_ip`):

- the IPv4 wildcard: Podman 4.3 needs ``HostIp: ""`` for it, while Docker Engine reads ``""``
  as "IPv4 and IPv6" and needs ``"0.0.0.0"`` to publish on IPv4 only, as the pool entry says;
- IPv6 host ports: Docker Engine's userland proxy carries them to the container's IPv4 address,
  while a Podman network without IPv6 (its default) holds the port and forwards nothing, so a
  client's connection is accepted and never answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Flavour", "read_flavour"]

# Podman's default network, under the name its Docker API gives it.
_PODMAN_DEFAULT_NETWORK = "bridge"


@dataclass(frozen=True)
class Flavour:
    podman: bool
    #: Whether a container published on an IPv6 host port can be reached there.
    ipv6: bool


def read_flavour(api: Any, server: str | None) -> Flavour:
    """Ask the engine (``api``: a docker SDK ``APIClient``); ``server`` is its ping's header.

    Podman's ping says ``Server: Libpod/4.3.1 (linux)``, Docker's ``Server: Docker/20.10.24``;
    without a ping (a ``tcp://`` engine) its version's components name it.
    """
    if server:
        podman = server.startswith("Libpod")
    else:
        components = (api.version() or {}).get("Components") or []
        podman = any("podman" in str(c.get("Name", "")).lower() for c in components)
    if not podman:
        return Flavour(podman=False, ipv6=True)
    network = api.inspect_network(_PODMAN_DEFAULT_NETWORK) or {}
    return Flavour(podman=True, ipv6=bool(network.get("EnableIPv6")))
