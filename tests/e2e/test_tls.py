"""HTTPS against a real `lightd serve` with a certificate made in the test (trustme): clients
verify it (a CA file or a pinned certificate), plain HTTP gets no answer, the connection bounds
hold during the handshake, bad files stop the start, and plain HTTP off loopback is warned about.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from lightd.client import Client, ClientError
from lightd.client._verify import client_ssl
from tests.conftest import HEADERS, TOKEN, write_test_config
from tests.e2e.daemon import ServedDaemon, free_port
from tests.netns import NetNs, entered

pytestmark = pytest.mark.slow

LIGHTD = str(Path(sys.executable).with_name("lightd"))
WAIT = 30.0  # how long the test waits for what must happen (not a timing assertion)


@dataclass
class Certs:
    ca: trustme.CA
    ca_file: Path
    cert: Path
    key: Path
    pin: str  # sha256:AB:... of the server's certificate, computed here, not by lightd

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_certs(folder: Path) -> Certs:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")  # not "localhost": see the pin test
    ca_file, cert, key = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    for blob in issued.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    issued.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(issued.cert_chain_pems[0].bytes().decode())).hexdigest()
    pin = "sha256:" + ":".join(digest[i : i + 2] for i in range(0, 64, 2)).upper()
    return Certs(ca, ca_file, cert, key, pin)


def tls_config(folder: Path, **api: object) -> Path:
    # Relative paths: relative to the config file's folder.
    return write_test_config(folder, api={"tls": {"cert": "cert.pem", "key": "key.pem"}, **api})


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path)


@pytest.fixture
def https(tmp_path: Path, certs: Certs) -> Iterator[ServedDaemon]:
    port = free_port()  # in the config too, for the CLI that reads its address there
    daemon = ServedDaemon(tls_config(tmp_path, header_timeout=2, port=port), port, tls=certs.context())
    daemon.start()
    yield daemon
    daemon.stop()


def cli(*args: str, token: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIGHTD_TOKEN": TOKEN} if token else dict(os.environ)
    return subprocess.run([LIGHTD, *args], capture_output=True, text=True, timeout=60, env=env)


def closed_within(sock: socket.socket, wait: float) -> bool:
    """Whether the daemon closes ``sock`` within ``wait`` seconds (reading whatever it sends)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(4096):
                return True
        except TimeoutError:
            return False
        except OSError:  # reset
            return True
    return False


def test_https_with_the_ca_answers_and_status_says_tls(https, certs):
    with Client(https.url, TOKEN, cacert=certs.ca_file) as client:
        status = client.status()
    assert https.url.startswith("https://")
    assert status["api"] == {"tls": True, "warning": None}
    assert certs.pin in https.tail()  # the log names the fingerprint to pin
    answer = httpx.get(https.url + "/network/ports", headers=HEADERS, verify=certs.context())
    assert answer.status_code == 200 and len(answer.json()["ports"]) == 5


def test_plain_http_to_the_tls_port_gets_no_http_answer(https):
    with pytest.raises(httpx.HTTPError):
        httpx.get(https.url.replace("https://", "http://") + "/api/v1/public/ping", timeout=10)
    with socket.create_connection(("127.0.0.1", https.port), timeout=10) as sock:
        sock.sendall(b"GET /api/v1/public/ping HTTP/1.1\r\nHost: lightd\r\n\r\n")
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
    assert not received.startswith(b"HTTP/")


def test_a_client_without_the_ca_refuses_the_certificate(https):
    with Client(https.url, TOKEN) as client, pytest.raises(ClientError) as refused:
        client.status()
    assert refused.value.status == 0 and "certificate verify failed" in refused.value.message.lower()
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(https.url + "/api/v1/public/ping")


def test_a_pinned_certificate_is_trusted_and_a_wrong_pin_refused(https, certs):
    # By 127.0.0.1 and by a name the certificate does not hold: the pin is the identity...
    by_name = https.url.replace("127.0.0.1", "localhost")
    for url in (https.url, by_name):
        with Client(url, TOKEN, pin=certs.pin.lower()) as client:
            assert client.status()["api"]["tls"] is True
    # ...where a CA checks the name as well.
    with Client(by_name, TOKEN, cacert=certs.ca_file) as client:
        assert not client.ping()
    wrong = "sha256:" + ":".join(["AB"] * 32)
    with Client(https.url, TOKEN, pin=wrong) as client, pytest.raises(ClientError) as refused:
        client.status()
    assert "not the pinned one" in refused.value.message and certs.pin in refused.value.message
    # A pin besides the CA: both must hold.
    with Client(https.url, TOKEN, cacert=certs.ca_file, pin=[wrong, certs.pin]) as client:
        assert client.ping()
    with Client(https.url, TOKEN, cacert=certs.ca_file, pin=wrong) as client:
        assert not client.ping()


async def test_a_pin_holds_for_the_async_client_too(https, certs):
    async with httpx.AsyncClient(verify=client_ssl(https.url, pin=certs.pin)) as client:
        assert (await client.get(https.url + "/api/v1/public/ping")).json() == {"status": "ok"}
    wrong = client_ssl(https.url, pin="00" * 32)
    async with httpx.AsyncClient(verify=wrong) as client:
        with pytest.raises(httpx.ConnectError, match="not the pinned one"):
            await client.get(https.url + "/api/v1/public/ping")


def test_the_cli_verifies_with_cacert_pin_or_the_config_s_own_certificate(https, certs):
    listed = cli("ports", "ls", "--url", https.url, "--cacert", str(certs.ca_file))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip().endswith("5 entries")
    pinned = cli("ports", "ls", "--url", https.url, "--pin", certs.pin)
    assert pinned.returncode == 0, pinned.stderr
    # No --url: the daemon of this config; it is trusted by the certificate the config names.
    own = cli("ports", "claim", "--config", str(https.config), token=False)
    assert own.returncode == 0, own.stderr
    assert own.stdout.strip().endswith("1 entries")

    refused = cli("ports", "ls", "--url", https.url)
    assert refused.returncode == 2
    assert "certificate verify failed" in refused.stderr.lower()
    assert len(refused.stderr.strip().splitlines()) == 1
    bad_pin = cli("ports", "ls", "--url", https.url, "--pin", "sha256:12:34")
    assert bad_pin.returncode == 2 and "64 hex digits" in bad_pin.stderr


def test_a_client_that_never_finishes_its_handshake_is_dropped(https, certs):
    """header_timeout (2 s here) covers the TLS handshake: asyncio's own TLS server would wait
    60 s for it."""
    silent = socket.create_connection(("127.0.0.1", https.port))
    halfway = socket.create_connection(("127.0.0.1", https.port))
    halfway.sendall(b"\x16\x03\x01\x00\xff\x01")  # the start of a ClientHello, and no more
    shaken = certs.context().wrap_socket(
        socket.create_connection(("127.0.0.1", https.port)), server_hostname="127.0.0.1"
    )  # a handshake done, then no request head
    with silent, halfway, shaken:
        assert closed_within(silent, WAIT)
        assert closed_within(halfway, WAIT)
        assert closed_within(shaken, WAIT)
    with Client(https.url, TOKEN, cacert=certs.ca_file) as client:
        assert client.ping()


def test_connections_in_their_handshake_count_against_max_connections(tmp_path, certs):
    daemon = ServedDaemon(tls_config(tmp_path, max_connections=3, header_timeout=60), tls=certs.context())
    daemon.start()
    try:
        # start() pinged over a connection it closed; let the daemon see that one end first, so
        # the three below are what fills the limit (a settling pause, not a timing assertion).
        time.sleep(0.5)
        held = [socket.create_connection(("127.0.0.1", daemon.port)) for _ in range(3)]
        try:
            with (
                pytest.raises((ssl.SSLError, OSError)),
                socket.create_connection(("127.0.0.1", daemon.port), timeout=WAIT) as extra,
            ):
                certs.context().wrap_socket(extra, server_hostname="127.0.0.1")
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + WAIT
        with Client(daemon.url, TOKEN, cacert=certs.ca_file) as client:
            while not client.ping() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.ping()
        assert "refusing connections: api.max_connections (3) are open" in daemon.tail()
    finally:
        daemon.stop()


def _encrypted(certs: Certs) -> None:
    key = serialization.load_pem_private_key(certs.key.read_bytes(), None)
    certs.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )


BAD_FILES = {
    "missing key": (lambda c: c.key.unlink(), "api.tls.key", "no such file"),
    "missing cert": (lambda c: c.cert.unlink(), "api.tls.cert", "no such file"),
    "another key": (
        lambda c: c.ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(c.key)),
        "api.tls.key",
        "is not the key of the certificate",
    ),
    "key readable by all": (lambda c: c.key.chmod(0o644), "api.tls.key", "mode 0644"),
    "key group-writable": (lambda c: c.key.chmod(0o660), "api.tls.key", "mode 0660"),
    "not a certificate": (lambda c: c.cert.write_text("hello\n"), "api.tls.cert", "no PEM certificate"),
    "a key for a cert": (lambda c: c.cert.write_bytes(c.key.read_bytes()), "api.tls.cert", "no PEM"),
    "encrypted key": (_encrypted, "api.tls.key", "passphrase"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_tls_files_stop_the_start_with_one_line_before_anything_is_created(tmp_path, certs, case):
    spoil, key, reason = BAD_FILES[case]
    spoil(certs)
    config = tls_config(tmp_path)
    before = json.loads(config.read_text())
    done = cli("serve", "--config", str(config), "--port", str(free_port()), token=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lightd: "), done.stderr
    assert key in lines[0] and reason in lines[0], lines[0]
    assert not (tmp_path / "data").exists()
    assert json.loads(config.read_text()) == before


def test_a_key_owned_by_root_may_be_readable_by_its_group(tmp_path, certs):
    if os.geteuid() != 0:
        pytest.skip("needs root: the key must be owned by root")
    certs.key.chmod(0o640)
    daemon = ServedDaemon(tls_config(tmp_path), tls=certs.context())
    daemon.start()
    daemon.stop()


def test_plain_http_off_loopback_is_warned_about_in_the_log_and_the_status(tmp_path, ns: NetNs):
    """0.0.0.0 only inside a private network namespace: never the host's own network."""
    ns.run("ip", "link", "set", "lo", "up")
    daemon = ServedDaemon(write_test_config(tmp_path, api={"host": "0.0.0.0"}), prefix=ns.prefix)
    with entered(ns.path):
        daemon.start()
        try:
            status = httpx.get(daemon.url + "/api/v1/status", headers=HEADERS).json()
        finally:
            daemon.stop()
    warning = status["api"]["warning"]
    assert status["api"]["tls"] is False
    assert "0.0.0.0" in warning and "without TLS" in warning and "api.tls" in warning
    assert f"WARNING lightd: {warning}" in daemon.tail()


def test_plain_http_on_another_loopback_address_is_not_warned_about(tmp_path):
    """127.0.0.2 is loopback too (all of 127.0.0.0/8 is), and only reachable from this host."""
    daemon = ServedDaemon(write_test_config(tmp_path, api={"host": "127.0.0.2"}))
    daemon.url = f"http://127.0.0.2:{daemon.port}"
    daemon.start()
    try:
        status = httpx.get(daemon.url + "/api/v1/status", headers=HEADERS).json()
    finally:
        daemon.stop()
    assert status["api"] == {"tls": False, "warning": None}
    assert "not a loopback address" not in daemon.tail()
