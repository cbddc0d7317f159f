"""What the daemon does at start: settings, and a firewall that cannot be reconciled (real SQLite file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightd.adapters.sqlite_writer import SqliteWriter
from lightd.bootstrap import Lightd
from lightd.config import FirewallSettings, PoolSettings, RuntimeSettings, default_raw, load_or_create
from lightd.errors import Unavailable
from lightd.service.ports import NoReservedPorts
from tests.conftest import write_test_config
from tests.fakes import FakeFirewall


class BrokenFirewall(FakeFirewall):
    async def reconcile(self, entries):  # type: ignore[no-untyped-def]
        raise Unavailable("iptables-restore failed: test failure")


@pytest.mark.parametrize("enabled", [True])
async def test_firewall_enabled_refuses_to_serve_without_its_rules(tmp_path: Path, enabled) -> None:
    settings = load_or_create(write_test_config(tmp_path, firewall={"enabled": enabled}))
    lightd = Lightd(settings, firewall=BrokenFirewall())
    try:
        with pytest.raises(Unavailable, match="iptables-restore failed"):
            await lightd.start()
    finally:
        await lightd.stop()


@pytest.mark.parametrize("enabled", ["auto", None])
async def test_firewall_auto_serves_and_reports_the_failure(tmp_path: Path, enabled) -> None:
    settings = load_or_create(write_test_config(tmp_path, firewall={"enabled": enabled}))
    lightd = Lightd(settings, firewall=BrokenFirewall())
    try:
        await lightd.start()
        assert lightd.startup["firewall"] == {"error": "iptables-restore failed: test failure"}
        assert len(lightd.pool.pool) == 5  # the embedded default ports, loaded from the file
    finally:
        await lightd.stop()


async def test_settings_set_to_null_take_their_defaults(tmp_path: Path) -> None:
    """A hand-written null means "the default", as a missing key does, in every section."""
    defaults = default_raw("")
    nulls = {name: dict.fromkeys(defaults[name]) for name in ("firewall", "pool", "repair", "metrics")}
    nulls["runtime"] = {"stop_timeout": None, "socket": None}
    nulls["storage"] = {"writer": None}
    nulls["api"] = {"tls": None, "access_log": None}
    settings = load_or_create(write_test_config(tmp_path, **nulls))
    assert settings.firewall == FirewallSettings() and settings.pool == PoolSettings()
    assert settings.runtime.socket == RuntimeSettings.socket == "/var/run/docker.sock"
    assert settings.repair.interval == 60 and settings.repair.idle_passes == 10
    assert settings.metrics.enabled and settings.api.tls is None and not settings.api.access_log
    # Never the host's own firewall, nor its reserved ports (pool.reserve_ports' default is on).
    lightd = Lightd(settings, firewall=FakeFirewall(), reserved=NoReservedPorts())
    try:
        await lightd.start()
        assert lightd.containers.stop_timeout == RuntimeSettings.stop_timeout == 10
        assert isinstance(lightd.pool.writer, SqliteWriter)  # storage.writer's default
        assert len(lightd.pool.pool) == 5  # pool.initial_ports' default
    finally:
        await lightd.stop()
