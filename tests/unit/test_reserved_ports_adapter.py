"""The reservation adapter where it cannot or may not write: reasons, warnings, failures.

Nothing here writes a kernel file: the paths given are temporary files or missing ones (the real
list is written only in tests/integration/test_reserved_ports_kernel.py, inside a namespace).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lightd.adapters.reserved_ports import KernelReservation, Unreserved, detect
from lightd.errors import Unavailable


@pytest.fixture
def port_range(tmp_path: Path) -> str:
    path = tmp_path / "ip_local_port_range"
    path.write_text("40000\t40100\n")  # as the kernel spells it
    return str(path)


def test_off_by_the_setting_or_without_root_says_why(monkeypatch):
    assert detect(False) == (False, "turned off in the settings (pool.reserve_ports is false)")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert detect(True) == (False, "not running as root (effective uid 1000)")


def test_a_file_that_cannot_be_opened_for_writing_turns_it_off(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # as root, or as anyone: the open decides
    on, reason = detect(True, str(tmp_path / "no-such-sysctl"))
    assert not on and reason.startswith(f"{tmp_path / 'no-such-sysctl'} cannot be written")


def test_warnings_name_the_ports_inside_the_ephemeral_range(port_range):
    unreserved = Unreserved("not running as root (effective uid 1000)", port_range)
    [warning] = unreserved.warnings([39999, 40000, 40001, 40100, 40101])
    assert warning.startswith(
        "ports 40000-40001,40100 are inside the kernel's ephemeral port "
        "range 40000-40100 (net.ipv4.ip_local_port_range)"
    )
    assert "(not running as root (effective uid 1000))" in warning
    assert unreserved.warnings([30000, 40101]) == []
    [one] = unreserved.warnings([40050])
    assert one.startswith("port 40050 is inside") and "reserve it (" in one
    [many] = unreserved.warnings(list(range(40000, 40100, 2)))
    assert "40000,40002,40004,40006,40008,40010,40012,40014,40016,40018 and 40 more ranges" in many
    assert unreserved.status() == {"enabled": False, "reason": unreserved.reason, "count": 0}


def test_without_a_readable_range_there_is_nothing_to_say(tmp_path):
    assert Unreserved("off", str(tmp_path / "missing")).warnings([40000]) == []


def test_a_failed_write_is_an_error_in_the_status_and_a_warning_on_adds(tmp_path, port_range):
    kernel = KernelReservation(
        tmp_path / "reserved_ports.json", sysctl=str(tmp_path / "missing"), port_range=port_range
    )
    assert kernel.warnings([40000]) == [], "reserving: nothing to warn about"
    with pytest.raises(Unavailable, match="could not be changed"):
        kernel.apply(bytes(65536))
    assert "could not be changed" in str(kernel.status()["last_error"])
    [warning] = kernel.warnings([40000])
    assert "the last change failed" in warning
    assert not (tmp_path / "reserved_ports.json").exists()
