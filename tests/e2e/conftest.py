from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_test_config
from tests.e2e.daemon import ServedDaemon


@pytest.fixture
def served(tmp_path):
    """A real `lightd serve` process on a free loopback port, with a temporary config."""
    daemon = ServedDaemon(write_test_config(tmp_path))
    daemon.start()
    yield daemon
    daemon.stop()


def engine_config(folder: Path, engine_url: str, **sections: dict[str, Any]) -> Path:
    """A test config whose daemon drives the container engine at ``engine_url``, on an empty pool."""
    engine_sections: dict[str, dict[str, Any]] = {
        "runtime": {"kind": "docker", "socket": engine_url, "stop_timeout": 1},
        "pool": {"initial_ports": []},
    }
    return write_test_config(folder, **{**engine_sections, **sections})


@pytest.fixture
def engine_served(tmp_path, engine_url):
    """`lightd serve` on the test's engine (each in turn, see tests/engine_support.py).

    It depends on ``engine_url``, so it starts inside the engine's network namespace and stops
    before the test leaves it.
    """
    daemon = ServedDaemon(engine_config(tmp_path, engine_url))
    daemon.start()
    yield daemon
    daemon.stop()
