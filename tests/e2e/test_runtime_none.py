"""``runtime.kind: none`` (bookkeeping only) across restarts of a real `lightd serve`."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import HEADERS, write_test_config
from tests.e2e.daemon import ServedDaemon
from tests.ports import quiet_port

pytestmark = pytest.mark.slow


def test_a_container_rebound_once_rebinds_again_after_a_restart(tmp_path):
    # On d0608b0 the second rebind answered 404 "No container none-mc-1.rebind is known to this
    # lightd": the engine id named the rebind's temporary container, which no restart remembers.
    config = write_test_config(tmp_path, runtime={"kind": "none"}, pool={"initial_ports": []})
    ports = [quiet_port("tcp", "0.0.0.0") for _ in range(3)]
    daemon = ServedDaemon(config)
    daemon.start()

    def call(method, path, **kwargs):
        return httpx.request(method, daemon.url + path, headers=HEADERS, timeout=30, **kwargs)

    def binding(port):
        return {"ports": [{"ip": "0.0.0.0", "port": port, "container_port": 25565}]}

    try:
        for port in ports:
            assert call("POST", "/network/ports", json={"ip": "0.0.0.0", "port": port}).status_code == 201
        created = call(
            "POST", "/containers", json={"internal_id": "mc-1", "image": "busybox", **binding(ports[0])}
        )
        assert created.status_code == 201, created.text
        assert call("POST", "/containers/mc-1/rebind-network", json=binding(ports[1])).status_code == 200
        daemon.stop()
        daemon.start()
        again = call("POST", "/containers/mc-1/rebind-network", json=binding(ports[2]))
        assert again.status_code == 200, again.text
        assert [p["port"] for p in again.json()["ports"]] == [ports[2]]
        shown = {p["port"]: p for p in call("GET", "/network/ports").json()["ports"]}
        assert [port for port in ports if shown[port]["in_use"]] == [ports[2]]
        assert call("DELETE", "/containers/mc-1").status_code == 200
        assert not any(shown["in_use"] for shown in call("GET", "/network/ports").json()["ports"])
    finally:
        daemon.stop()
