"""The installed `lightd` command: client commands only read a config, plain help, --version,
tokens HTTP can carry, notes that cannot drive a terminal, and Client.ping on a daemon that is down."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lightd import __version__
from lightd.client import Client
from tests.conftest import HEADERS, TOKEN
from tests.ports import quiet_port

pytestmark = pytest.mark.slow

LIGHTD = str(Path(sys.executable).with_name("lightd"))
GOOD = "lightd_" + "a1" * 16
COMMANDS = [
    ["serve"],
    ["config", "check"],
    ["token", "what"],
    ["token", "reset"],
    ["token", "set"],
    ["ports", "add"],
    ["ports", "ls"],
    ["ports", "claim"],
]


def run(*args: str, cwd: Path | None = None, stdin: str = "", token: bool = False):
    env = {k: v for k, v in os.environ.items() if k not in ("LIGHTD_CONFIG", "LIGHTD_TOKEN")}
    if token:
        env["LIGHTD_TOKEN"] = TOKEN
    return subprocess.run(
        [LIGHTD, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env, input=stdin
    )


def tree(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mode)
        for p in [folder, *folder.rglob("*")]
    }


@pytest.mark.parametrize(
    "args",
    [
        ["ports", "ls"],
        ["ports", "add", "0.0.0.0", "20001"],
        ["ports", "claim"],
        ["ports", "ls", "--url", "http://127.0.0.1:1"],
    ],
)
def test_client_commands_in_an_empty_folder_create_no_config(tmp_path, args):
    """Before: `lightd ports ls` here wrote config.json with a new token."""
    done = run(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "lightd: config.json: no such file (lightd serve creates it; or give "
        "--config PATH or $LIGHTD_CONFIG)\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ["ports", "ls"],
        ["ports", "claim"],
        ["token", "what"],
        ["token", "reset"],
        ["token", "set", GOOD],
        ["config", "check"],
        ["serve"],
    ],
)
def test_a_folder_given_as_config_is_refused_and_left_as_it_was(tmp_path, args):
    """Before: --config naming a folder chmodded it to 0600 and crashed with a traceback."""
    folder = tmp_path / "etc"
    folder.mkdir(mode=0o755)
    before = tree(tmp_path)
    done = run(*args, "--config", str(folder), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == f"lightd: {folder}: is not a file (--config names the config file itself)\n"
    assert tree(tmp_path) == before
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755


def test_client_commands_read_the_config_and_change_nothing(served):
    config = served.config
    config.chmod(0o644)  # serve would tighten it; a client only reads
    before = tree(config.parent)
    listed = run("ports", "ls", "--config", str(config), "--url", served.url)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip().endswith("5 entries")
    without_url = run("ports", "ls", "--config", str(config))  # api.port 0 in the file: no daemon
    assert without_url.returncode == 2 and "cannot reach lightd at http://127.0.0.1:0" in without_url.stderr
    assert {k: v for k, v in tree(config.parent).items() if k != "lightd.log"} == {
        k: v for k, v in before.items() if k != "lightd.log"
    }
    assert stat.S_IMODE(config.stat().st_mode) == 0o644


def test_version_and_plain_help_that_lists_every_command():
    version = run("--version")
    assert (version.returncode, version.stdout) == (0, f"lightd {__version__}\n")
    top = run("--help")
    assert top.returncode == 0
    named = set()
    for first, subs in re.findall(r"^ +lightd ([a-z]+)(?: ([a-z|]+))? ", top.stdout, flags=re.MULTILINE):
        named |= {f"{first} {sub}" for sub in subs.split("|")} if subs else {first}
    assert named >= {" ".join(command) for command in COMMANDS}, top.stdout
    for command in [[], *COMMANDS, ["token"], ["ports"], ["config"]]:
        shown = run(*command, "--help")
        assert shown.returncode == 0, (command, shown.stderr)
        text = shown.stdout
        assert "Usage: lightd" in text, command
        # No rich boxes, colours, rst literals or markup tags: plain text in any terminal.
        assert not re.search(r"[\x1b╭╮╰╯│─]|``|\[/?(bold|red|green|cyan|dim)", text), (command, text)


def test_token_set_refuses_what_http_cannot_carry(tmp_path):
    config = tmp_path / "config.json"
    assert run("token", "set", GOOD, "--config", str(config)).returncode == 0
    before = config.read_bytes()
    for bad in ("lightd_" + "é" * 20, "lightd_" + "ü" * 10 + "a" * 10):
        refused = run("token", "set", bad, "--config", str(config))
        assert refused.returncode == 2 and refused.stderr.startswith(
            "lightd: a token must be visible ASCII characters"
        ), refused.stderr
        piped = run("token", "set", "--config", str(config), stdin=bad + "\n")
        assert piped.returncode == 2
    assert config.read_bytes() == before
    assert json.loads(before)["authorization"]["token"] == GOOD


def test_a_note_with_control_characters_is_refused_and_nothing_added(served):
    for command in (["ports", "add", "0.0.0.0", "20001"], ["ports", "claim"]):
        done = run(*command, "--note", "red\x1b[31m\nfake", "--url", served.url, token=True)
        assert done.returncode == 2
        assert done.stderr == (
            "lightd: --note must be visible characters and spaces, got red\\x1b[31m\\nfake\n"
        )
    with Client(served.url, TOKEN) as client:
        assert len(client.list_ports()) == 5 and not client.list_ports(in_use=True)


def test_ports_ls_shows_notes_from_other_clients_escaped(served):
    note = "\x1b[2J\x1b[Hcleared\r\n0.0.0.0  1  tcp  no  -  fake row\x07"
    answer = httpx.post(
        f"{served.url}/network/ports",
        headers=HEADERS,
        timeout=10,
        json={"ip": "0.0.0.0", "port": 20002, "protocol": "udp", "note": note},
    )
    assert answer.status_code == 201, answer.text
    listed = run("ports", "ls", "--protocol", "udp", "--url", served.url, token=True)
    assert listed.returncode == 0, listed.stderr
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", listed.stdout)
    lines = listed.stdout.splitlines()
    assert len(lines) == 3 and lines[-1] == "1 entries"
    assert lines[1].endswith("\\x1b[2J\\x1b[Hcleared\\r\\n0.0.0.0  1  tcp  no  -  fake row\\x07")


def test_ping_is_false_when_the_daemon_is_down_and_true_when_up(served):
    with Client(f"http://127.0.0.1:{quiet_port()}", TOKEN, timeout=5) as down:
        assert down.ping() is False
    with Client(served.url, TOKEN) as up:
        assert up.ping() is True
    served.stop()
    with Client(served.url, TOKEN, timeout=5) as stopped:
        assert stopped.ping() is False
