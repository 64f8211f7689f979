"""The edge worker's default receiver URL and the receiver agree on the delivery path.

edge/wrangler.toml sent QStash to /webhook/qstash while the receiver serves /api/qstash, so
every message a deployed worker published was a 404 (and then QStash's DLQ). Both sides are
read from their single sources: the worker's [vars] and the receiver's RECEIVER_PATH.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from urllib.parse import urlsplit

from qpipe_dagster_tests.webhook_sensor.conftest import start_receiver
from webhook_sensor.app import RECEIVER_PATH

WRANGLER = Path(__file__).resolve().parents[2] / "edge" / "wrangler.toml"


def _worker_receiver_url() -> str:
    return tomllib.loads(WRANGLER.read_text("utf-8"))["vars"]["RECEIVER_URL"]


def test_worker_default_posts_to_the_path_the_receiver_serves(tmp_path: Path) -> None:
    path = urlsplit(_worker_receiver_url()).path
    assert path == RECEIVER_PATH, f"edge/wrangler.toml RECEIVER_URL path {path!r}"
    # and the real receiver answers there as a delivery endpoint (401: unsigned), not 404
    server, receiver = start_receiver(tmp_path)
    with server:
        try:
            at_worker_path = receiver.client.post(receiver.base + path, content=b"{}")
            assert at_worker_path.status_code == 401, at_worker_path.text
            assert at_worker_path.json() == {"error": "missing_header"}
            old = receiver.client.post(receiver.base + "/webhook/qstash", content=b"{}")
            assert old.status_code == 404
        finally:
            receiver.client.close()
