"""The operator's CLI and the Python client, against a real `lightd serve` process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightd.client import Client, ClientError
from tests.conftest import TOKEN

pytestmark = pytest.mark.slow

LIGHTD = str(Path(sys.executable).with_name("lightd"))


def lightd(served, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LIGHTD, *args, "--url", served.url], capture_output=True, text=True, timeout=60,
        env={**os.environ, "LIGHTD_TOKEN": TOKEN},
    )


def test_ports_add_ls_and_claim(served):
    added = lightd(served, "ports", "add", "0.0.0.0", "25565-25600", "27015", "--protocol", "both")
    assert added.returncode == 0, added.stderr
    assert "added 69 entries, 5 already in the pool" in added.stdout

    claimed = lightd(served, "ports", "claim", "--count", "2", "--protocol", "udp", "--note", "gotv")
    assert claimed.returncode == 0, claimed.stderr
    lines = claimed.stdout.splitlines()
    assert lines[0].split() == ["IP", "PORT", "PROTO", "IN", "USE", "HOLDER", "NOTE"]
    assert len(lines) == 4 and all("udp" in line and "gotv" in line for line in lines[1:3])

    used = lightd(served, "ports", "ls", "--used")
    assert used.returncode == 0 and used.stdout.strip().endswith("2 entries")
    free = lightd(served, "ports", "ls", "--free", "--protocol", "tcp")
    assert free.stdout.strip().endswith("37 entries")


def test_a_big_range_shows_progress_and_errors_are_one_line(served):
    big = lightd(served, "ports", "add", "0.0.0.0", "1000-20999")
    assert big.returncode == 0 and "added 20000 entries" in big.stdout
    assert "adding" in big.stderr  # the progress bar
    bad = lightd(served, "ports", "add", "203.0.113.7", "5")
    assert bad.returncode == 2
    assert bad.stderr.startswith("lightd: ip 203.0.113.7 is not an address of this host")
    contradiction = lightd(served, "ports", "ls", "--free", "--used")
    assert contradiction.returncode == 2


def test_python_client_over_http(served):
    with Client(served.url, TOKEN) as client:
        assert client.ping()
        client.add("127.0.0.1", 30000, "udp", note="bedrock")
        assert client.get("127.0.0.1", 30000)["note"] == "bedrock"
        [entry] = client.claim(ip="127.0.0.1", protocol="udp")
        assert (entry["port"], entry["in_use"]) == (30000, True)
        with pytest.raises(ClientError) as error:
            client.claim(ip="127.0.0.1", protocol="udp")
        assert (error.value.status, error.value.message) == (409, "No available ports in pool")
        assert client.use("127.0.0.1", 30000, False)["in_use"] is False
        assert client.delete("127.0.0.1", 30000) == {"message": "Port deleted from pool"}
    with Client(served.url, "lightd_wrong_token_123456") as wrong, pytest.raises(ClientError) as error:
        wrong.list_ports()
    assert error.value.status == 401
