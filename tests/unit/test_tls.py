"""lightd.tls and the client's verification, without a server: loopback, pins, key modes, contexts."""

from __future__ import annotations

import hashlib
import os
import ssl
from pathlib import Path

import pytest
import trustme

from lightd.client._verify import PinnedContext, client_ssl
from lightd.errors import InvalidInput
from lightd.tls import api_security, fingerprint, is_loopback, parse_pin, pem_fingerprint, server_context


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """cert.pem (the server's certificate, then its CA's, as a chain file), key.pem, and the
    server certificate's DER."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(issued.cert_chain_pems[0].bytes() + ca.cert_pem.bytes())
    issued.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    return cert, key, ssl.PEM_cert_to_DER_cert(issued.cert_chain_pems[0].bytes().decode())


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "::ffff:127.0.0.1", "localhost"]
)
def test_all_of_127_8_and_ipv6_loopback_count_as_loopback(host):
    assert is_loopback(host)
    assert api_security(host, tls=False) == {"tls": False, "warning": None}


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "", "10.0.0.1", "192.0.2.7", "::ffff:10.0.0.1", "fe80::1%lo"]
)
def test_wildcards_and_other_addresses_are_not_loopback(host):
    assert not is_loopback(host)
    security = api_security(host, tls=False)
    assert security["tls"] is False and "without TLS" in security["warning"]
    assert api_security(host, tls=True) == {"tls": True, "warning": None}


def test_fingerprints_read_as_openssl_prints_them(files):
    cert, _, der = files
    digest = hashlib.sha256(der).hexdigest().upper()
    assert fingerprint(der) == "sha256:" + ":".join(digest[i : i + 2] for i in range(0, 64, 2))
    assert pem_fingerprint(cert) == fingerprint(der)  # the first certificate of a chain file


def test_a_pin_may_be_written_with_or_without_prefix_colons_and_case(files):
    _, _, der = files
    digest = hashlib.sha256(der).digest()
    shown = fingerprint(der)
    for text in (shown, shown.lower(), shown.removeprefix("sha256:"), digest.hex(), f"  {shown} "):
        assert parse_pin(text) == digest


@pytest.mark.parametrize(
    "text", ["", "sha256:", "sha1:" + "AB" * 20, "AB" * 31, "ZZ" * 32, "sha256:" + "AB" * 33]
)
def test_a_pin_that_is_not_a_sha256_is_refused(text):
    with pytest.raises(InvalidInput, match="64 hex digits"):
        parse_pin(text)


def test_a_server_context_loads_a_good_pair(files):
    cert, key, _ = files
    context = server_context(cert, key, "config.json")
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_a_key_group_readable_is_refused_unless_root_owns_it(files):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the key to another owner")
    cert, key, _ = files
    key.chmod(0o640)
    server_context(cert, key)  # root's: a group such as ssl-cert may read it
    os.chown(key, 65534, 65534)
    with pytest.raises(InvalidInput, match=r"config.json: api.tls.key: .* \(mode 0640\)"):
        server_context(cert, key, "config.json")


def test_a_key_that_is_a_folder_is_refused(files, tmp_path):
    cert, _, _ = files
    with pytest.raises(InvalidInput, match="api.tls.key: .* is not a file"):
        server_context(cert, tmp_path)


def test_https_is_verified_by_the_system_cas_by_default(files):
    context = client_ssl("https://lightd.example:8070")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_a_ca_file_verifies_chain_and_name(files):
    cert, _, _ = files
    context = client_ssl("https://127.0.0.1:8070", cacert=cert)
    assert isinstance(context, PinnedContext) and not context.pins
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_a_pin_alone_replaces_the_ca_and_name_checks(files):
    _, _, der = files
    context = client_ssl("https://127.0.0.1:8070", pin=fingerprint(der))
    assert isinstance(context, PinnedContext)
    assert context.pins == {hashlib.sha256(der).digest()}
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


def test_a_ca_file_or_pin_for_plain_http_is_refused(files):
    cert, _, der = files
    with pytest.raises(InvalidInput, match="plain HTTP"):
        client_ssl("http://127.0.0.1:8070", cacert=cert)
    with pytest.raises(InvalidInput, match="plain HTTP"):
        client_ssl("http://127.0.0.1:8070", pin=fingerprint(der))
    assert client_ssl("http://127.0.0.1:8070") is True


def test_a_missing_or_empty_ca_file_is_refused(tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        client_ssl("https://127.0.0.1:8070", cacert=tmp_path / "nothing.pem")
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificate here\n")
    with pytest.raises(InvalidInput, match="holds no usable certificate"):
        client_ssl("https://127.0.0.1:8070", cacert=empty)
