"""Durability: a 200 means the message survives SIGKILL; duplicates are stored once.

Run on both inbox backends: the default SQLite file and PostgreSQL via QPIPE_INBOX_URL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from qpipe_dagster_tests.webhook_sensor.conftest import CURRENT, NEXT, free_port, make_token
from webhook_sensor.inbox import InboxTarget, is_postgres_url, open_inbox

REPO = Path(__file__).resolve().parents[2]


def _spawn(home: Path, port: int, inbox_url: str | None = None) -> subprocess.Popen:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "QSTASH_CURRENT_SIGNING_KEY": CURRENT,
        "QSTASH_NEXT_SIGNING_KEY": NEXT,
        "QPIPE_RECEIVER_URL": f"http://127.0.0.1:{port}/api/qstash",
    }
    env.pop("QPIPE_INBOX_PATH", None)
    env.pop("QPIPE_INBOX_URL", None)
    if inbox_url:
        env["QPIPE_INBOX_URL"] = inbox_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "webhook_sensor.app:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"receiver did not start: {proc.stderr.read().decode()[-2000:]}")


def test_message_survives_sigkill_right_after_200(tmp_path, inbox_target: InboxTarget):
    home = tmp_path / "home"
    home.mkdir()
    inbox_url = str(inbox_target) if is_postgres_url(inbox_target) else None
    stored_at = inbox_url or home / "qpipe" / "inbox.sqlite"  # SQLite: the default location
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/qstash"
    body = b'{"concept": "Crash Safe", "urls": ["https://example.com/"]}'
    proc = _spawn(home, port, inbox_url)
    try:
        resp = httpx.post(
            url,
            content=body,
            headers={
                "Upstash-Signature": make_token(CURRENT, url, body),
                "Upstash-Message-Id": "msg_crash",
                "Upstash-Retried": "2",
                "Upstash-Schedule-Id": "scd_123",
            },
        )
        assert resp.status_code == 200, resp.text
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    stored = open_inbox(stored_at).get("msg_crash")
    assert stored is not None and stored.slug == "crash-safe"
    assert stored.retried == 2 and stored.schedule_id == "scd_123"
    assert stored.caller_ip == "127.0.0.1"
    # A restarted receiver sees the same inbox: QStash's redelivery is acknowledged, not re-stored.
    proc = _spawn(home, port, inbox_url)
    try:
        again = httpx.post(
            url,
            content=body,
            headers={
                "Upstash-Signature": make_token(NEXT, url, body),
                "Upstash-Message-Id": "msg_crash",
            },
        )
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert open_inbox(stored_at).count() == 1
    events = [
        json.loads(line)
        for line in proc.stderr.read().decode().splitlines()
        if line.startswith("{")
    ]
    dup = next(e for e in events if e["event"] == "delivery_duplicate")
    assert dup["message_id"] == dup["correlation_id"] == "msg_crash" and dup["level"] == "info"
