from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx

from lightd.client._verify import client_ssl

__all__ = ["Client", "ClientError"]

VENDOR = "Application/vnd.pkglatv1+json"
Json = dict[str, Any]


class ClientError(Exception):
    """lightd answered with an error: its status and its one-sentence message."""

    def __init__(self, status: int, message: str, body: Json | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body or {}


class Client:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        cacert: str | os.PathLike[str] | None = None,
        pin: str | Sequence[str] | None = None,
    ) -> None:
        """``cacert`` (a PEM file of CAs) and ``pin`` (``sha256:AB:CD:...`` of the server's
        certificate, or several) verify an https ``url``; with neither, the system's CAs do."""
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "Accept": VENDOR},
            timeout=timeout,
            transport=transport,
            verify=client_ssl(url, cacert, pin),
        )

    @classmethod
    def from_config(cls, path: Path, url: str | None = None, **options: Any) -> Client:
        """A client for the daemon that the config file at ``path`` describes."""
        from lightd.config import load

        settings = load(path)  # read only: a client never creates or changes a config
        host = settings.api.host
        if host == "0.0.0.0":
            host = "127.0.0.1"
        elif host == "::":
            host = "[::1]"
        elif ":" in host:
            host = f"[{host}]"
        tls = settings.api.tls
        if url is None and tls is not None and not options.get("cacert") and not options.get("pin"):
            # The daemon this config describes serves the certificate named in it: trust exactly
            # that one (a self-signed certificate, or one that does not name 127.0.0.1).
            from lightd.tls import pem_fingerprint

            options["pin"] = pem_fingerprint(tls.cert, f"{settings.path}: api.tls.cert")
        scheme = "http" if tls is None else "https"
        return cls(url or f"{scheme}://{host}:{settings.api.port}", settings.token, **options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Json:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(0, f"cannot reach lightd at {self._http.base_url}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):  # not lightd's answer: say what came instead
            text = response.text[:200] or response.reason_phrase
            if response.status_code < 400:
                raise ClientError(response.status_code, f"{self._http.base_url} is not lightd: {text}")
            body = {"error": text}
        if response.status_code >= 400:
            raise ClientError(response.status_code, str(body.get("error", body)), body)
        return body

    # -- the seed's endpoints ----------------------------------------------------------------

    def ping(self) -> bool:
        """Whether lightd answers at this address: False (never an exception) when it is down,
        unreachable, or something else answers."""
        try:
            return self._call("GET", "/api/v1/public/ping").get("status") == "ok"
        except ClientError:
            return False

    def add(self, ip: str, port: int, protocol: str = "tcp", note: str | None = None) -> Json:
        body: Json = {"ip": ip, "port": port, "protocol": protocol}
        if note is not None:
            body["note"] = note
        return self._call("POST", "/network/ports", json=body)

    def get(self, ip: str, port: int, protocol: str | None = None) -> Json:
        return self._call("GET", f"/network/ports/{ip}/{port}", params=_only(protocol=protocol))

    def list_ports(
        self,
        ip: str | None = None,
        protocol: str | None = None,
        in_use: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[Json]:
        params = _only(ip=ip, protocol=protocol, limit=limit, offset=offset,
                       in_use=None if in_use is None else str(in_use).lower())
        ports: list[Json] = self._call("GET", "/network/ports", params=params)["ports"]
        return ports

    def random(self, ip: str | None = None, protocol: str | None = None) -> Json:
        return self._call("GET", "/network/ports/random", params=_only(ip=ip, protocol=protocol))

    def use(self, ip: str, port: int, in_use: bool, protocol: str | None = None) -> Json:
        return self._call("PUT", f"/network/ports/{ip}/{port}/use", json={"in_use": in_use},
                          params=_only(protocol=protocol))

    def delete(self, ip: str, port: int, protocol: str | None = None) -> Json:
        return self._call("DELETE", f"/network/ports/{ip}/{port}", params=_only(protocol=protocol))

    def bulk_delete(self, entries: Iterable[Json]) -> Json:
        return self._call("POST", "/network/ports/bulk-delete", json={"ports": list(entries)})

    # -- allocation ----------------------------------------------------------------------------

    def add_range(self, ip: str, ports: Sequence[int | str], protocol: str = "tcp",
                  note: str | None = None) -> Json:
        body: Json = {"ip": ip, "protocol": protocol, "ports": list(ports)}
        if note is not None:
            body["note"] = note
        return self._call("POST", "/network/ports/bulk", json=body)

    def claim(self, count: int = 1, ip: str | None = None, protocol: str = "tcp",
              contiguous: bool = False, note: str | None = None) -> list[Json]:
        body: Json = {"count": count, "protocol": protocol, "contiguous": contiguous}
        body.update(_only(ip=ip, note=note))
        ports: list[Json] = self._call("POST", "/network/ports/claim", json=body)["ports"]
        return ports

    def status(self) -> Json:
        return self._call("GET", "/api/v1/status")


def _only(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
