"""A ping of a Docker Engine API's unix socket, over a socket of our own.

Asked before the SDK's client is made, so a dead engine costs no client, no pool of
connections and no SDK retries; the answer's headers name the API version, which spares the
client its own ``/version`` round trip (slow on Podman).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

__all__ = ["Ping", "ping"]

_MAX_ANSWER = 65536  # a ping answers "OK"; anything longer is not an engine


@dataclass(frozen=True)
class Ping:
    """``why_not`` is None when the engine answered, else half a sentence saying why not."""

    why_not: str | None
    api_version: str | None = None
    server: str | None = None


def ping(path: str, timeout: float) -> Ping:
    """``GET /_ping`` on the unix socket ``path``, waiting at most ``timeout`` seconds a step."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = b""
            while len(data) < _MAX_ANSWER:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError:
        return Ping(f"the socket {path} does not exist")
    except ConnectionRefusedError:
        return Ping(f"nothing listens on the socket {path}")
    except PermissionError:
        return Ping(f"no permission to use the socket {path}")
    except TimeoutError:
        return Ping(f"the socket {path} did not answer within {timeout:g}s")
    except OSError as exc:
        return Ping(f"the socket {path} failed: {exc.strerror or exc}")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split()
    if len(status) < 2 or status[1] != "200" or body.strip() != b"OK":
        return Ping(f"the socket {path} does not speak the Docker Engine API")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return Ping(None, headers.get("api-version") or None, headers.get("server") or None)
