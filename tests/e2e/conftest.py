from __future__ import annotations

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
