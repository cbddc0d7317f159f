"""A bad config stops `lightd serve` with one line naming the key, exit 2, before anything exists;
`lightd config check` gives the same verdict without starting; a fixed config then starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import HEADERS, TOKEN, write_test_config
from tests.e2e.daemon import ServedDaemon

pytestmark = pytest.mark.slow

LIGHTD = str(Path(sys.executable).with_name("lightd"))
# An address no interface of a test host has (TEST-NET-1, RFC 5737).
NOT_LOCAL = "192.0.2.1"

# (the config's sections, the key the one line names, the end of that line)
CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"pool": {"host_check": "false"}}, "pool.host_check", 'must be true or false, got "false"'),
    ({"api": {"port": 70000}}, "api.port", "must be an integer from 0 to 65535, got 70000"),
    ({"api": []}, "api", "must be an object, got []"),
    ({"api": {"port": "80x"}}, "api.port", 'must be an integer from 0 to 65535, got "80x"'),
    (
        {"pool": {"initial_ports": [{"ip": "0.0.0.0", "ports": "0-5"}]}},
        "pool.initial_ports[0].ports",
        'must be a port from 1 to 65535, a range like "27015-27030" (low to high) or a list of both, '
        'got "0-5"',
    ),
    (
        {"pool": {"initial_ports": [{"ip": NOT_LOCAL, "ports": "20001"}]}},
        "pool.initial_ports[0].ip",
        f'must be an address of this host (or 0.0.0.0, ::), got "{NOT_LOCAL}"; add it to an interface '
        "first, or set pool.require_local_ip to false",
    ),
    (
        {"pool": {"host_chek": False}},
        "pool.host_chek",
        "is not a setting lightd knows (did you mean "
        "pool.host_check?); pool takes host_check, initial_ports, require_local_ip, reserve_ports",
    ),
    ({"api": {"access_log": "true"}}, "api.access_log", 'must be true or false, got "true"'),
    ({"firewall": {"enabled": "yes"}}, "firewall.enabled", 'must be true, false or "auto", got "yes"'),
    (
        {"storage": {"write_timeout": "NaN"}},
        "storage.write_timeout",
        'must be a number of seconds above 0 and at most 86400, got "NaN"',
    ),
    (
        {"repair": {"interval": -1}},
        "repair.interval",
        "must be 0 (off) or a number of seconds up to 86400, got -1",
    ),
    ({"repair": {"idle_passes": 2.5}}, "repair.idle_passes", "must be an integer from 1 to 1000000, got 2.5"),
    ({"metrics": {"enabled": 1}}, "metrics.enabled", "must be true or false, got 1"),
    ({"pool": {"reserve_ports": "off"}}, "pool.reserve_ports", 'must be true or false, got "off"'),
    (
        {"api": {"tls": {"cert": "cert.pem", "key": "key.pem"}}},
        "api.tls.cert",
        'must be a file lightd can read, got "cert.pem" ({folder}/cert.pem: no such file)',
    ),
]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LIGHTD_CONFIG", "LIGHTD_TOKEN")}
    try:
        return subprocess.run([LIGHTD, *args], capture_output=True, text=True, timeout=30, cwd=cwd, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"lightd {' '.join(args)} did not stop (it started instead of refusing?)")


def bad_config(folder: Path, sections: dict[str, Any], raw: str | None = None) -> Path:
    path = write_test_config(folder)
    config = json.loads(path.read_text())
    for name, values in sections.items():
        config[name] = values if not isinstance(values, dict) else {**config.get(name, {}), **values}
    path.write_text(raw if raw is not None else json.dumps(config))
    return path


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mode)
        for p in folder.rglob("*")
    }


@pytest.mark.parametrize(("sections", "key", "rule"), CASES, ids=[case[1] for case in CASES])
@pytest.mark.parametrize("command", [["serve"], ["config", "check"]])
def test_a_bad_value_is_one_line_exit_2_and_nothing_is_created(tmp_path, command, sections, key, rule):
    path = bad_config(tmp_path, sections)
    before = snapshot(tmp_path)
    done = run(*command, "--config", str(path), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"lightd: {path}: {key} {rule.replace('{folder}', str(tmp_path))}\n"
    assert done.stdout == ""
    assert snapshot(tmp_path) == before, "no data folder, database, lock file or config change"


@pytest.mark.parametrize("command", [["serve"], ["config", "check"]])
def test_json_that_is_not_json_and_a_top_level_typo(tmp_path, command):
    for raw, line in [
        ("[]", "must hold a JSON object, got []"),
        (
            '{"api": {"port": 8070,}}',
            "is not valid JSON: Expecting property name enclosed in double "
            "quotes: line 1 column 23 (char 22)",
        ),
        ('{"apii": {}}', "apii is not a setting lightd knows (did you mean api?)"),
        (
            '{"api": {"max_connections": 1e999}}',
            "api.max_connections must be an integer from 1 to 1000000, got Infinity",
        ),
    ]:
        path = bad_config(tmp_path, {}, raw=raw)
        before = snapshot(tmp_path)
        done = run(*command, "--config", str(path), cwd=tmp_path)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(f"lightd: {path}: {line}"), done.stderr
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("raw", "args", "end"),
    [
        ({"pool": {"host_check": "false"}}, [], 'pool.host_check must be true or false, got "false"'),
        ({"api": {"port": 0}}, ["--port", "70000"], "--port must be an integer from 0 to 65535, got 70000"),
        (
            {"pool": {"initial_ports": [{"ip": NOT_LOCAL, "ports": 20001}]}},
            [],
            "add it to an interface first, or set pool.require_local_ip to false",
        ),
        ({"api": {"tls": {"cert": "cert.pem", "key": "key.pem"}}}, [], "holds no PEM certificate"),
    ],
)
def test_a_refused_config_without_a_token_is_left_without_one(tmp_path, raw, args, end):
    """The token a first start would write is not written when the rest is refused."""
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("not PEM\n")
        (tmp_path / name).chmod(0o600)
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                **raw,
                "storage": {"base_path": "data"},
                "firewall": {"enabled": False},
                "runtime": {"kind": "none"},
            }
        )
    )
    path.chmod(0o644)
    before = snapshot(tmp_path)
    done = run("serve", "--config", str(path), *args, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("lightd: ") and done.stderr.rstrip().endswith(end), done.stderr
    assert snapshot(tmp_path) == before  # no token written, the mode as it was, no data folder


def test_port_overrides_on_the_command_line_are_checked(tmp_path):
    path = write_test_config(tmp_path)
    done = run("serve", "--config", str(path), "--port", "70000", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        "lightd: --port must be an integer from 0 to 65535, got 70000\n",
    )
    assert not (tmp_path / "data").exists()


def test_a_seed_typo_leaves_no_empty_pool_and_the_fixed_config_seeds_it(tmp_path):
    """Before: the 0-5 typo left a database with an empty pool that was never seeded again."""
    path = bad_config(tmp_path, {"pool": {"initial_ports": [{"ip": "0.0.0.0", "ports": "0-5"}]}})
    assert run("serve", "--config", str(path), cwd=tmp_path).returncode == 2
    assert not (tmp_path / "data").exists()
    path.write_text(
        json.dumps(
            {
                **json.loads(path.read_text()),
                # The rest of write_test_config's pool section stays (reserve_ports false: this
                # daemon runs in the host's network namespace).
                "pool": {
                    **json.loads(path.read_text())["pool"],
                    "initial_ports": [{"ip": "0.0.0.0", "ports": "1-5"}],
                },
            }
        )
    )
    daemon = ServedDaemon(path)
    daemon.start()
    try:
        answer = httpx.get(f"{daemon.url}/network/ports", headers=HEADERS, timeout=10)
        assert [entry["port"] for entry in answer.json()["ports"]] == [1, 2, 3, 4, 5]
    finally:
        daemon.stop()


def test_a_non_local_seed_address_starts_when_require_local_ip_is_false(tmp_path):
    path = bad_config(
        tmp_path,
        {"pool": {"initial_ports": [{"ip": NOT_LOCAL, "ports": "20001"}], "require_local_ip": False}},
    )
    daemon = ServedDaemon(path)
    daemon.start()
    try:
        answer = httpx.get(f"{daemon.url}/network/ports", headers=HEADERS, timeout=10)
        assert [(e["ip"], e["port"]) for e in answer.json()["ports"]] == [(NOT_LOCAL, 20001)]
    finally:
        daemon.stop()


def test_config_check_says_ok_with_a_summary_and_creates_nothing(tmp_path):
    path = write_test_config(tmp_path, repair={"interval": 0}, metrics={"enabled": False})
    before = snapshot(tmp_path)
    done = run("config", "check", "--config", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{path}: ok"
    summary = dict(line.split(None, 1) for line in lines[1:])
    assert summary["api"] == "http://127.0.0.1:0"
    assert summary["database"] == (f"{tmp_path}/data/lightd.sqlite3 is created at start with 5 initial ports")
    assert summary["repair"] == "off, idle after 10 passes" and summary["metrics"] == "off"
    assert snapshot(tmp_path) == before


def test_config_check_of_a_missing_file_creates_nothing(tmp_path):
    done = run("config", "check", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "lightd: config.json: no such file (lightd serve creates it; or give "
        "--config PATH or $LIGHTD_CONFIG)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_started_daemon_answers_with_the_token_of_its_config(tmp_path):
    """The strict parse did not lose a value on the way: the daemon runs on what the file says."""
    path = write_test_config(tmp_path, api={"header_timeout": 2.5}, storage={"writer": "thread"})
    daemon = ServedDaemon(path)
    daemon.start()
    try:
        status = httpx.get(f"{daemon.url}/api/v1/status", headers=HEADERS, timeout=10).json()
        assert status["pool"]["database"] == str(tmp_path / "data" / "lightd.sqlite3")
        wrong = {**HEADERS, "Authorization": "Bearer " + TOKEN[:-1] + "x"}
        assert httpx.get(f"{daemon.url}/api/v1/status", headers=wrong, timeout=10).status_code == 401
    finally:
        daemon.stop()
