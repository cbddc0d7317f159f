"""The config is parsed once, strictly: every key's type and range, unknown keys, one line each."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from lightd.config import (
    ConfigError,
    InitialPorts,
    Settings,
    default_raw,
    load,
    load_or_create,
    parse,
    validate_token,
)
from lightd.errors import InvalidInput

TOKEN = "lightd_" + "0123456789abcdef" * 2
HERE = Path("/srv/lightd/config.json")
README = Path(__file__).resolve().parents[2] / "README.md"


def refusal(raw: Any) -> str:
    with pytest.raises(ConfigError) as error:
        parse(raw, HERE, "config.json")
    [line] = error.value.message.splitlines()
    return line


def leaves(raw: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for key, value in raw.items():
        if isinstance(value, dict):
            found += leaves(value, f"{prefix}{key}.")
        else:
            found.append((f"{prefix}{key}", value))
    return found


def with_value(dotted: str, value: Any) -> dict[str, Any]:
    raw = default_raw(TOKEN)
    *sections, key = dotted.split(".")
    place = raw
    for name in sections:
        place = place[name]
    place[key] = value
    return raw


def test_the_file_a_first_start_writes_parses_to_the_defaults():
    settings = parse(default_raw(TOKEN), HERE)
    assert settings.api.host == "127.0.0.1" and settings.api.port == 8070 and settings.api.tls is None
    assert settings.storage.base_path == Path("/srv/lightd/data")
    assert settings.database_path == Path("/srv/lightd/data/lightd.sqlite3")
    assert settings.pool.initial_ports == (
        InitialPorts("0.0.0.0", (25565, 25566, 25567, 25568, 25569), ("tcp",)),
    )
    assert (settings.pool.host_check, settings.pool.require_local_ip, settings.pool.reserve_ports) == (
        True,
        True,
        True,
    )
    assert (settings.repair.interval, settings.repair.idle_passes) == (60.0, 10)
    assert settings.metrics.enabled is True and settings.firewall.enabled == "auto"
    # An empty file means the same: every key missing takes the default.
    empty = parse({"authorization": {"token": TOKEN}}, HERE)
    assert empty == settings


def test_the_issues_cases_are_one_line_naming_key_and_value():
    assert refusal({"pool": {"host_check": "false"}}) == (
        'config.json: pool.host_check must be true or false, got "false"'
    )
    assert refusal({"api": {"port": 70000}}) == (
        "config.json: api.port must be an integer from 0 to 65535, got 70000"
    )
    assert refusal({"api": []}) == "config.json: api must be an object, got []"
    assert refusal({"api": {"port": "80x"}}) == (
        'config.json: api.port must be an integer from 0 to 65535, got "80x"'
    )
    assert refusal({"pool": {"initial_ports": [{"ip": "0.0.0.0", "ports": "0-5"}]}}).startswith(
        "config.json: pool.initial_ports[0].ports must be a port from 1 to 65535"
    )


@pytest.mark.parametrize(("dotted", "default"), leaves(default_raw(TOKEN)))
def test_every_key_refuses_values_of_the_wrong_type(dotted: str, default: Any):
    """Each key of the file, given values of JSON types it does not take (bools as strings too)."""
    wrong: list[Any] = [[], {"x": 1}, "true"]
    if isinstance(default, bool):
        wrong += ["false", 0, 1, 1.5]
    elif isinstance(default, int):
        wrong += [True, str(default), float("nan"), float("inf"), -1, 10**400]
    elif isinstance(default, str):
        wrong = [[], {"x": 1}, 1, 1.5, "", "a\x00b"]  # "true" is a string like any other
        if dotted != "firewall.enabled":  # true, false or "auto"
            wrong.append(True)
        if dotted == "authorization.token":
            wrong.remove("")  # empty: lightd serve writes a fresh one
    elif default is None:  # api.tls: null means off; an object needs cert and key
        wrong = [[], "x", 1, True, {"cert": None}]
    else:  # pool.initial_ports ([] is a pool seeded empty)
        wrong = [
            {"x": 1},
            "25565",
            True,
            1,
            [{"ports": "25565", "port": 1}],
            [{"ip": "0.0.0.0"}],
            ["25565"],
            [{"ports": "25565", "protocol": "sctp"}],
            [{"ports": "25565", "ip": "host"}],
        ]
    for value in wrong:
        line = refusal(with_value(dotted, value))
        assert line.startswith(f"config.json: {dotted}"), (dotted, value, line)
        assert " must be " in line or " is not a setting" in line or ": a token must" in line, line


def test_numbers_must_be_finite_and_in_range():
    for dotted, value in [
        ("api.header_timeout", float("nan")),
        ("api.body_timeout", 1e999),
        ("storage.write_timeout", 0),
        ("api.max_connections", 2.5),
        ("repair.interval", -1),
        ("repair.idle_passes", 0),
        ("runtime.stop_timeout", 86_401),
        ("api.port", -1),
    ]:
        line = refusal(with_value(dotted, value))
        assert line.startswith(f"config.json: {dotted} must be "), line
    assert refusal(with_value("api.header_timeout", float("nan"))).endswith("got NaN")
    assert refusal(with_value("api.max_connections", 10**400)).endswith("digits or more")
    assert parse(with_value("repair.interval", 0), HERE).repair.interval == 0  # 0 turns the loop off
    assert parse(with_value("repair.interval", 0.5), HERE).repair.interval == 0.5


def test_unknown_keys_are_refused_with_the_nearest_known_one():
    assert refusal({"pool": {"host_chek": True}}).startswith(
        "config.json: pool.host_chek is not a setting lightd knows (did you mean pool.host_check?)"
    )
    assert "(did you mean api?)" in refusal({"apii": {}})
    assert "api.tls.kye is not a setting" in refusal(
        {"api": {"tls": {"cert": __file__, "key": __file__, "kye": "x"}}}
    )
    assert "pool.initial_ports[1].port is not a setting" in refusal(
        {"pool": {"initial_ports": [{"ports": 1}, {"ports": 2, "port": 3}]}}
    )


def test_null_and_missing_keys_take_their_defaults_in_every_section():
    nulls = {name: dict.fromkeys(section) for name, section in default_raw("").items()}
    nulls["authorization"] = {"token": TOKEN}
    assert parse(nulls, HERE) == parse({"authorization": {"token": TOKEN}}, HERE)
    assert parse({name: None for name in nulls} | {"authorization": {"token": TOKEN}}, HERE) == parse(
        nulls, HERE
    )


def test_enumerated_words_are_exact():
    assert 'storage.writer must be "process" or "thread", got "fork"' in refusal(
        with_value("storage.writer", "fork")
    )
    assert refusal(with_value("runtime.kind", "Docker")).endswith(
        'runtime.kind must be "auto", "docker" or "none", got "Docker"'
    )
    for legacy in ("true", "on", "yes", " True ", "AUTO"):
        assert refusal(with_value("firewall.enabled", legacy)).startswith(
            'config.json: firewall.enabled must be true, false or "auto"'
        )
    assert parse(with_value("firewall.enabled", True), HERE).firewall.enabled == "on"
    assert parse(with_value("firewall.enabled", False), HERE).firewall.enabled == "off"
    assert "firewall.chain must be 1 to 28" in refusal(with_value("firewall.chain", "INPUT"))


def test_api_tls_paths_are_relative_to_the_config_folder(tmp_path: Path):
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "key.pem").write_text("x")
    tls = parse(
        {
            "api": {"tls": {"cert": "cert.pem", "key": str(tmp_path / "key.pem")}},
            "authorization": {"token": TOKEN},
        },
        tmp_path / "config.json",
    ).api.tls
    assert tls is not None and (tls.cert, tls.key) == (tmp_path / "cert.pem", tmp_path / "key.pem")
    line = refusal({"api": {"tls": {"cert": "missing.pem", "key": "key.pem"}}})
    assert line == (
        'config.json: api.tls.cert must be a file lightd can read, got "missing.pem" '
        "(/srv/lightd/missing.pem: no such file)"
    )
    assert refusal({"api": {"tls": {"cert": str(tmp_path / "cert.pem")}}}).startswith(
        "config.json: api.tls.key must be a file path, got null"
    )


def test_values_are_shown_escaped_and_cut():
    line = refusal(with_value("api.host", "evil\x1b[2J\nhost" + "x" * 500))
    assert "\x1b" not in line and "\n" not in line and len(line) < 200
    assert "\\u001b[2J\\nhost" in line


def test_tokens_http_cannot_carry_are_refused():
    for bad in ("lightd_" + "é" * 20, "lightd_" + "a" * 20 + "\x00", "lightd_ with spaces inside"):
        with pytest.raises(InvalidInput, match="a token must"):
            validate_token(bad)
        line = refusal({"authorization": {"token": bad}})
        assert line.startswith("config.json: authorization.token") and "\x00" not in line, line
    assert validate_token(f"  {TOKEN}\n") == TOKEN  # typed or piped, the newline is not part of it


def test_overrides_from_the_command_line_are_checked_the_same_way():
    settings = parse(default_raw(TOKEN), HERE)
    assert settings.with_overrides("::1", 0).api.port == 0
    with pytest.raises(ConfigError, match=r"^--port must be an integer from 0 to 65535, got 70000$"):
        settings.with_overrides(port=70000)
    with pytest.raises(ConfigError, match=r"^--host must be an IP address or a host name"):
        settings.with_overrides(host="")


def test_reading_changes_nothing_and_a_refusal_writes_nothing(tmp_path: Path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"pool": {"host_check": "false"}}))  # no token, mode 0644
    path.chmod(0o644)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="pool.host_check"):
        load_or_create(path)
    assert path.read_bytes() == before and path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    with pytest.raises(ConfigError, match="is not a file"):
        load(tmp_path)
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "missing.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_check_that_fails_stops_load_or_create_before_it_writes(tmp_path: Path):
    path = tmp_path / "config.json"

    def refuse(settings: Settings) -> None:
        raise settings.error("pool.initial_ports[0].ip", "must be an address of this host")

    with pytest.raises(ConfigError, match=r"config.json: pool.initial_ports\[0\].ip must be an address"):
        load_or_create(path, refuse)
    assert not path.exists()


def test_the_readme_documents_every_key():
    """The Configuration section's table names every key the parser takes."""
    text = README.read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", section, flags=re.MULTILINE))
    keys = {dotted for dotted, _ in leaves(default_raw(TOKEN))} | {
        "firewall.netns",
        "api.tls.cert",
        "api.tls.key",
    }
    assert keys - documented == set()


def test_settings_are_frozen():
    settings = parse(default_raw(TOKEN), HERE)
    with pytest.raises(AttributeError):
        settings.api.port = 1  # type: ignore[misc]
    assert copy.deepcopy(settings) == settings
