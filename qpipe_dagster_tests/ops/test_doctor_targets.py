"""`qpipe doctor` checks what is really in use, from where it runs.

Inside a container the public receiver URL is often unreachable (TLS proxy, hairpin NAT), so
doctor failed in every container; and it checked QPIPE_EMBED_MODEL's default while search used
the model `qpipe reembed` had made active.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from qpipe_dagster.ops.doctor import FAIL, OK, WARN, check_model, check_receiver
from qpipe_dagster_tests.webhook_sensor.conftest import start_receiver

PUBLIC = "https://qpipe.example.invalid/api/qstash"  # .invalid never resolves


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound by this test and not listening: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def test_public_url_is_reported_not_probed(closed_port: int) -> None:
    """Old: probed the public URL and FAILed; now the local port is tried (WARN: not here)."""
    check = check_receiver({"QPIPE_RECEIVER_URL": PUBLIC, "QPIPE_RECEIVER_PORT": str(closed_port)})
    assert check.status == WARN, check
    assert (
        f"127.0.0.1:{closed_port}" in check.detail and "QPIPE_RECEIVER_HEALTH_URL" in check.detail
    )
    assert f"public URL {PUBLIC}" in check.detail and "not probed" in check.detail


def test_internal_url_is_checked_and_public_one_reported(tmp_path: Path, closed_port: int) -> None:
    server, receiver = start_receiver(tmp_path)
    with server:
        try:
            # its first /ready loads the Dagster instance: slow on a busy 2-core machine
            assert receiver.client.get(receiver.base + "/ready", timeout=60).status_code == 200
            env = {"QPIPE_RECEIVER_HEALTH_URL": receiver.base, "QPIPE_RECEIVER_URL": PUBLIC}
            check = check_receiver(env)
            assert check.status == OK, check
            assert "/health 200" in check.detail and "/ready 200" in check.detail
            assert PUBLIC in check.detail
        finally:
            receiver.client.close()
    down = check_receiver({"QPIPE_RECEIVER_HEALTH_URL": f"http://127.0.0.1:{closed_port}"})
    assert down.status == FAIL and "QPIPE_RECEIVER_HEALTH_URL" in down.detail
    bad = check_receiver({"QPIPE_RECEIVER_HEALTH_URL": "receiver:8766"})
    assert bad.status == FAIL and "QPIPE_RECEIVER_HEALTH_URL='receiver:8766'" in bad.detail


def test_model_check_uses_the_model_made_active_by_reembed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "qpipe").mkdir(parents=True)
    env = {"DAGSTER_HOME": str(home)}
    default = check_model(env)
    assert default.status == OK and "(default)" in default.detail
    # what `qpipe reembed --model ...` leaves behind (rotation.set_active_model)
    (home / "qpipe" / "active_model.json").write_text(
        json.dumps({"name": "acme/not-packaged-model", "truncate_dim": None})
    )
    active = check_model(env)
    assert active.status == FAIL, active  # old: OK, about the default model nobody uses now
    assert active.detail.startswith("acme/not-packaged-model (active since qpipe reembed)")
    pinned = check_model({**env, "QPIPE_EMBED_MODEL": "all-MiniLM-L6-v2"})
    assert pinned.status == OK and "(QPIPE_EMBED_MODEL)" in pinned.detail
    (home / "qpipe" / "active_model.json").write_text("{not json")
    broken = check_model(env)
    assert broken.status == FAIL and "active_model.json" in broken.detail
