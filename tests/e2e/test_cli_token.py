"""`lightd token what|reset|set`, the installed command on a real config file."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

LIGHTD = str(Path(sys.executable).with_name("lightd"))
GOOD = "lightd_" + "a1" * 16


def token(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([LIGHTD, "token", *args, "--config", str(config)], input=stdin,
                          capture_output=True, text=True, timeout=60)


def stored(config: Path) -> str:
    return str(json.loads(config.read_text())["authorization"]["token"])


def test_what_creates_the_config_owner_only_and_prints_its_token(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    shown = token(config, "what")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == stored(config) and stored(config).startswith("lightd_")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert token(config, "what").stdout == shown.stdout  # the same token on the next call


def test_reset_and_set_replace_only_the_token(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    first = token(config, "what").stdout.strip()
    raw = json.loads(config.read_text())
    reset = token(config, "reset")
    assert reset.returncode == 0 and reset.stdout.strip() not in ("", first)
    assert stored(config) == reset.stdout.strip()
    assert token(config, "set", stdin=GOOD + "\n").returncode == 0
    raw["authorization"]["token"] = GOOD
    assert json.loads(config.read_text()) == raw  # everything else as it was
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_set_refuses_a_bad_token_and_changes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    before = token(config, "what").stdout.strip()
    for bad in ("short", "nope_" + "x" * 30, "lightd_ with spaces inside it"):
        refused = token(config, "set", bad)
        assert refused.returncode != 0 and "a token must" in refused.stderr, bad
        assert stored(config) == before


def test_set_repairs_a_config_whose_token_is_invalid(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"authorization": {"token": "hand-edited"}}))
    config.chmod(0o600)
    assert token(config, "what").returncode != 0  # the daemon would refuse it too
    repaired = token(config, "set", GOOD)
    assert repaired.returncode == 0, repaired.stderr
    assert stored(config) == GOOD and token(config, "what").stdout.strip() == GOOD
