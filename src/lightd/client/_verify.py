"""How the client trusts a lightd served over HTTPS: a CA file, pinned certificates, or both.

- ``cacert``: the server's chain must lead to a certificate in this PEM file, and the
  certificate must name the host of the URL (the usual check, against this file only);
- ``pin``: the server's certificate must be one of these (SHA-256 of the certificate,
  ``sha256:AB:CD:...`` as ``openssl x509 -noout -fingerprint -sha256`` prints it); alone, it
  replaces the CA and host name checks (a self-signed certificate, an address not in it);
- neither: the system's trusted CAs and the host name, as a browser would.

Nothing here turns verification off. A pin is checked when the handshake ends, before a byte of
the request (and so the token) is sent: the handshake itself proves the server holds the key of
the certificate it showed, so the fingerprint is all that is left to check.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

from lightd.errors import InvalidInput
from lightd.tls import fingerprint, parse_pin

__all__ = ["PinnedContext", "client_ssl"]


def _check_pin(context: ssl.SSLContext, der: bytes | None) -> None:
    pins: frozenset[bytes] = getattr(context, "pins", frozenset())
    if not pins:
        return
    if der is None or hashlib.sha256(der).digest() not in pins:
        shown = "none" if der is None else fingerprint(der)
        raise ssl.SSLCertVerificationError(
            f"certificate verify failed: the server's certificate ({shown}) is not the pinned one"
        )


class _PinnedSocket(ssl.SSLSocket):
    """A blocking TLS socket (httpx's sync client) that checks the pin once the handshake is done."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        _check_pin(self.context, self.getpeercert(binary_form=True))


class _PinnedObject(ssl.SSLObject):
    """The same for TLS over memory buffers (httpx's async client, through anyio)."""

    def do_handshake(self) -> None:
        super().do_handshake()
        _check_pin(self.context, self.getpeercert(binary_form=True))


class PinnedContext(ssl.SSLContext):
    """A client context whose handshakes also require one of ``pins`` (SHA-256 digests)."""

    pins: frozenset[bytes] = frozenset()
    sslsocket_class = _PinnedSocket
    sslobject_class = _PinnedObject


def client_ssl(
    url: str,
    cacert: str | os.PathLike[str] | None = None,
    pin: str | Sequence[str] | None = None,
) -> ssl.SSLContext | bool:
    """httpx's ``verify`` for ``url``: a context for https, True (unused) for plain http."""
    pins = frozenset(parse_pin(text) for text in ([pin] if isinstance(pin, str) else pin or ()))
    if not url.lower().startswith("https://"):
        if cacert is not None or pins:
            raise InvalidInput(f"a CA file or a pin verifies HTTPS only, and {url} is plain HTTP")
        return True
    context = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # A CA file may hold an intermediate or the server's own certificate (as Python 3.13's
    # default context allows): trust ends at what the file holds.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.pins = pins
    if cacert is not None:
        path = Path(cacert).expanduser()
        try:
            context.load_verify_locations(cafile=path)
        except FileNotFoundError:
            raise InvalidInput(f"the CA file {path} does not exist") from None
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise InvalidInput(f"the CA file {path} holds no usable certificate ({reason})") from None
    elif pins:
        context.check_hostname = False  # the pin is the identity; a self-signed certificate
        context.verify_mode = ssl.CERT_NONE  # names no CA, and often not the address used
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context
