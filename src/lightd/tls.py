"""TLS for the API: the server's certificate and key from ``api.tls``, fingerprints, loopback.

Everything here is checked before the daemon creates or changes anything, and each problem is
one sentence naming the setting (``api.tls.cert`` or ``api.tls.key``) and the file. The key is
refused when others may read it, as PostgreSQL refuses its ``ssl_key_file``: mode 0600 or less,
or 0640 or less when root owns the file (a group such as ``ssl-cert`` may read it then). lightd
does not chmod the key itself (unlike its config): the key often belongs to another tool, such
as certbot, and a changed mode there would be a surprise.

Standard library only: the client (pins) and the status (loopback) use it without the server.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
import ssl
import stat
from pathlib import Path
from typing import Any

from lightd.errors import InvalidInput

__all__ = [
    "PLAIN_WARNING",
    "api_security",
    "fingerprint",
    "is_loopback",
    "parse_pin",
    "pem_fingerprint",
    "server_context",
]

PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----\s+.*?\s+-----END CERTIFICATE-----", re.DOTALL)
PLAIN_WARNING = (
    "the API listens on {host}, which is not a loopback address, without TLS: the token and "
    "every request travel in clear; set api.tls (README, TLS)"
)


class _Encrypted(Exception):
    """The key asks for a passphrase: a daemon has nobody to ask."""


def _refuse_passphrase() -> bytes:
    raise _Encrypted


def server_context(cert: Path, key: Path, where: str = "") -> ssl.SSLContext:
    """A server context with the certificate chain in ``cert`` (``api.tls.cert``) and its key,
    or InvalidInput saying which setting is wrong and why (``where``: the config file)."""
    prefix = f"{where}: " if where else ""
    cert_text = _read(cert, f"{prefix}api.tls.cert")
    _check_key_mode(key, f"{prefix}api.tls.key")
    _read(key, f"{prefix}api.tls.key")
    if not PEM_CERTIFICATE.search(cert_text):
        raise InvalidInput(f"{prefix}api.tls.cert: {cert} holds no PEM certificate")
    try:  # parses every certificate of the chain, so a broken one is the cert's fault
        ssl.create_default_context(cadata="\n".join(PEM_CERTIFICATE.findall(cert_text)))
    except (ssl.SSLError, ValueError) as exc:
        raise InvalidInput(
            f"{prefix}api.tls.cert: {cert} is not a valid PEM certificate ({_ssl_reason(exc)})"
        ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert, key, password=_refuse_passphrase)
    except _Encrypted:
        raise InvalidInput(
            f"{prefix}api.tls.key: {key} is encrypted with a passphrase, which lightd "
            "cannot ask for; store it decrypted (openssl pkey -in KEY -out NEW), mode 0600"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise InvalidInput(
                f"{prefix}api.tls.key: {key} is not the key of the certificate in {cert}"
            ) from None
        raise InvalidInput(
            f"{prefix}api.tls.key: {key} is not a PEM private key ({_ssl_reason(exc)})"
        ) from None
    return context


def _read(path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise _unreadable(path, key, exc) from None


def _unreadable(path: Path, key: str, exc: OSError) -> InvalidInput:
    reason = "no such file" if isinstance(exc, FileNotFoundError) else (exc.strerror or str(exc))
    return InvalidInput(f"{key}: {path}: {reason.lower()}")


def _check_key_mode(path: Path, key: str) -> None:
    try:
        found = os.stat(path)  # follows links, as certbot's live/ names are
    except OSError as exc:
        raise _unreadable(path, key, exc) from None
    if not stat.S_ISREG(found.st_mode):
        raise InvalidInput(f"{key}: {path} is not a file")
    others = stat.S_IMODE(found.st_mode) & 0o077
    if others and not (found.st_uid == 0 and others == 0o040):
        raise InvalidInput(
            f"{key}: {path} is open to others (mode {stat.S_IMODE(found.st_mode):04o}); a TLS key "
            "must be 0600 or less, or 0640 or less when root owns it: chmod 600 it"
        )


def _ssl_reason(exc: ssl.SSLError | ValueError) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason).lower().replace("_", " ") if reason else str(exc)


def fingerprint(der: bytes) -> str:
    """``sha256:AB:CD:...``: a certificate's SHA-256, as ``openssl x509 -fingerprint`` shows it."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return "sha256:" + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def pem_fingerprint(path: Path, key: str = "api.tls.cert") -> str:
    """The fingerprint of the first certificate (the server's own) in a PEM file."""
    found = PEM_CERTIFICATE.search(_read(path, key))
    if found is None:
        raise InvalidInput(f"{key}: {path} holds no PEM certificate")
    try:
        return fingerprint(ssl.PEM_cert_to_DER_cert(found.group(0)))
    except ValueError:
        raise InvalidInput(f"{key}: {path} is not a valid PEM certificate") from None


def parse_pin(text: str) -> bytes:
    """The SHA-256 digest a pin names: ``sha256:AB:CD:...``, with or without the prefix and the
    colons, in either case."""
    value = text.strip()
    if value.lower().startswith("sha256:"):
        value = value[len("sha256:") :]
    digits = value.replace(":", "")
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", digits):
        raise InvalidInput(
            f"a pin is the SHA-256 fingerprint of the server's certificate, "
            f"sha256:AB:CD:... (64 hex digits), got {_shown(text)}"
        )
    return bytes.fromhex(digits)


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` stands for is a loopback one (all of 127.0.0.0/8 and ::1).

    The wildcards ("", 0.0.0.0, ::) are every address, so not loopback; a name counts by what
    it resolves to, as the listening socket is bound to that.
    """
    if not host:
        return False
    try:
        return _loopback_address(host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]) for info in infos}
    return bool(addresses) and all(_loopback_address(address) for address in addresses)


def _loopback_address(text: str) -> bool:
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def api_security(host: str, tls: bool) -> dict[str, Any]:
    """``status()["api"]``: whether the API speaks TLS, and the warning when it should."""
    warning = None if tls or is_loopback(host) else PLAIN_WARNING.format(host=host or '""')
    return {"tls": tls, "warning": warning}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
