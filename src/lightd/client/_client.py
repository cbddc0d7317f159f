from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from lightd.client._events import Event, EventParser
from lightd.client._verify import client_ssl

__all__ = ["Client", "ClientError", "Event"]

VENDOR = "Application/vnd.pkglatv1+json"
Json = dict[str, Any]
# The event stream is silent but for a heartbeat every events.heartbeat seconds (15 by default):
# a minute without a byte is a connection that died without closing.
EVENTS_READ_TIMEOUT = 60.0
EVENTS_ACCEPT = f"text/event-stream, {VENDOR}"
# After a dropped stream: wait this long before the next try, doubling up to the last.
RECONNECT_FIRST, RECONNECT_MOST = 0.5, 5.0


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
        self._timeout = timeout
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
            raise self._unreachable(exc) from None
        return self._answer(response)

    def _unreachable(self, exc: Exception) -> ClientError:
        return ClientError(0, f"cannot reach lightd at {self._http.base_url}: {exc}")

    def _answer(self, response: httpx.Response) -> Json:
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
        params = _only(
            ip=ip,
            protocol=protocol,
            limit=limit,
            offset=offset,
            in_use=None if in_use is None else str(in_use).lower(),
        )
        ports: list[Json] = self._call("GET", "/network/ports", params=params)["ports"]
        return ports

    def random(self, ip: str | None = None, protocol: str | None = None) -> Json:
        return self._call("GET", "/network/ports/random", params=_only(ip=ip, protocol=protocol))

    def use(self, ip: str, port: int, in_use: bool, protocol: str | None = None) -> Json:
        return self._call(
            "PUT", f"/network/ports/{ip}/{port}/use", json={"in_use": in_use}, params=_only(protocol=protocol)
        )

    def delete(self, ip: str, port: int, protocol: str | None = None) -> Json:
        return self._call("DELETE", f"/network/ports/{ip}/{port}", params=_only(protocol=protocol))

    def bulk_delete(self, entries: Iterable[Json]) -> Json:
        return self._call("POST", "/network/ports/bulk-delete", json={"ports": list(entries)})

    # -- allocation ----------------------------------------------------------------------------

    def add_range(
        self, ip: str, ports: Sequence[int | str], protocol: str = "tcp", note: str | None = None
    ) -> Json:
        body: Json = {"ip": ip, "protocol": protocol, "ports": list(ports)}
        if note is not None:
            body["note"] = note
        return self._call("POST", "/network/ports/bulk", json=body)

    def claim(
        self,
        count: int = 1,
        ip: str | None = None,
        protocol: str = "tcp",
        contiguous: bool = False,
        note: str | None = None,
        ttl: int | None = None,
    ) -> list[Json]:
        """The claimed entries; with ``ttl`` (seconds) they are held by a lease that frees them
        when it expires (each entry's ``"lease"`` names it; :meth:`claim_lease` returns it too)."""
        ports: list[Json] = self._claim(count, ip, protocol, contiguous, note, ttl)["ports"]
        return ports

    def claim_lease(
        self,
        count: int = 1,
        ip: str | None = None,
        protocol: str = "tcp",
        contiguous: bool = False,
        note: str | None = None,
        *,
        ttl: int,
    ) -> Json:
        """Claim under a lease of ``ttl`` seconds: the whole answer, ``{"ports": [...],
        "lease": {"id", "expires_at", "ttl"}}``."""
        return self._claim(count, ip, protocol, contiguous, note, ttl)

    def _claim(
        self, count: int, ip: str | None, protocol: str, contiguous: bool, note: str | None, ttl: int | None
    ) -> Json:
        body: Json = {"count": count, "protocol": protocol, "contiguous": contiguous}
        body.update(_only(ip=ip, note=note, ttl=ttl))
        return self._call("POST", "/network/ports/claim", json=body)

    def status(self) -> Json:
        return self._call("GET", "/api/v1/status")

    # -- leases --------------------------------------------------------------------------------

    def leases(self) -> list[Json]:
        """Every lease, soonest to expire first: ``{"id", "expires_at", "ttl", "created_at", "ports"}``."""
        leases: list[Json] = self._call("GET", "/network/leases")["leases"]
        return leases

    def lease(self, lease_id: str) -> Json:
        return self._call("GET", f"/network/leases/{_segment(lease_id)}")

    def renew(self, lease_id: str, ttl: int | None = None) -> Json:
        """Move the lease's expiry to ``ttl`` seconds from now (its own ttl when None)."""
        body = {} if ttl is None else {"json": {"ttl": ttl}}
        return self._call("POST", f"/network/leases/{_segment(lease_id)}/renew", **body)

    def release(self, lease_id: str) -> Json:
        """Free the lease's entries now: ``{"message", "freed": [entries]}``."""
        return self._call("DELETE", f"/network/leases/{_segment(lease_id)}")

    def keep(self, lease_id: str) -> Json:
        """End the lease, keeping its entries in use, held by the operator: ``{"message", "kept"}``."""
        return self._call("POST", f"/network/leases/{_segment(lease_id)}/keep")

    # -- the event stream ----------------------------------------------------------------------

    def events(self, after: int | None = None, reconnect: bool = True) -> Iterator[Event]:
        """Every change to the pool as it happens, in order: :class:`Event` (id, type, data).

        ``after`` (sent as ``?after=``): start with the events after this id (from the
        daemon's backlog), else only new ones. An event of type ``reset`` says events were
        missed (too far behind): re-read the pool. The first connection must succeed (else
        ClientError, status 0); once the stream has been open, a dropped connection is retried
        (with ``reconnect``, 0.5 s doubling to 5 s between tries, forever) sending
        ``Last-Event-ID``, so no event is missed, or ends the iteration (without). An error
        answer (401, 406, 400...) raises ClientError at once, on a reconnect too.
        """
        last = after
        connected = False
        delay = RECONNECT_FIRST
        timeout = httpx.Timeout(self._timeout, read=EVENTS_READ_TIMEOUT)
        while True:
            headers = {"Accept": EVENTS_ACCEPT}
            params: dict[str, str] = {}
            if last is not None and connected:  # a reconnect: where the last one left off
                headers["Last-Event-ID"] = str(last)
            elif last is not None:
                params["after"] = str(last)
            try:
                with self._http.stream(
                    "GET", "/network/events", headers=headers, params=params, timeout=timeout
                ) as response:
                    self._check_stream(response)
                    connected = True
                    delay = RECONNECT_FIRST
                    parser = EventParser(last)
                    for chunk in response.iter_bytes():
                        try:
                            events = parser.feed(chunk)
                        except ValueError as exc:
                            raise ClientError(
                                200, f"{self._http.base_url} sent what is not lightd's event stream: {exc}"
                            ) from None
                        for event in events:
                            last = event.id
                            yield event
            except httpx.HTTPError as exc:
                if not connected:
                    raise self._unreachable(exc) from None
            if not reconnect:
                return
            time.sleep(delay)
            delay = min(delay * 2, RECONNECT_MOST)

    def _check_stream(self, response: httpx.Response) -> None:
        """Raise ClientError unless ``response`` is lightd's event stream."""
        kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if response.status_code == 200 and kind == "text/event-stream":
            return
        response.read()
        if response.status_code < 400:
            text = response.text[:200] or response.reason_phrase
            raise ClientError(
                response.status_code,
                f"{self._http.base_url} is not lightd's event stream ({kind or 'no content-type'}): {text}",
            )
        self._answer(response)  # raises with lightd's error
        raise ClientError(response.status_code, response.reason_phrase)  # pragma: no cover


def _only(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _segment(text: str) -> str:
    """``text`` as one path segment: a lease id typed as ``../ports`` names no other route."""
    return quote(text, safe="").replace(".", "%2E")
