"""Alert rules under promtool, and an alert end to end: exporter -> Prometheus -> Alertmanager ->
a loopback webhook, all real processes on free loopback ports."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
import yaml
from dagster import DagsterInstance

from qpipe_dagster.monitoring.collector import PipelineCollector
from qpipe_dagster.monitoring.server import build_registry, serve
from qpipe_dagster_tests.monitoring import promstack
from webhook_sensor.inbox import InboxRecord, open_inbox

TESTS = promstack.REPO / "deploy" / "prometheus" / "alerts_test.yml"


def test_rules_are_valid_and_pass_their_unit_tests() -> None:
    promtool = promstack.need("promtool", "prometheus")
    check = subprocess.run(
        [promtool, "check", "rules", str(promstack.ALERTS)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run(
        [promtool, "test", "rules", TESTS.name],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr


def test_every_rule_has_a_firing_and_a_silent_case() -> None:
    """promtool passes a file that tests only some rules; this holds every rule to both."""
    rules = [
        r["alert"]
        for g in yaml.safe_load(promstack.ALERTS.read_text())["groups"]
        for r in g["rules"]
    ]
    fires: set[str] = set()
    silent: set[str] = set()
    for test in yaml.safe_load(TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    assert sorted(set(rules) - fires) == []
    assert sorted(set(rules) - silent) == []


def test_shipped_configs_are_valid(tmp_path: Path) -> None:
    promtool = promstack.need("promtool", "prometheus")
    config = yaml.safe_load(promstack.PROMETHEUS_YML.read_text())
    config["rule_files"] = [str(promstack.ALERTS)]  # the container path, made local
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    check = subprocess.run(
        [promtool, "check", "config", str(local)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    amtool = promstack.need("amtool", "prometheus-alertmanager")
    check = subprocess.run(
        [amtool, "check-config", str(promstack.ALERTMANAGER_YML)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_an_alert_reaches_the_webhook_through_prometheus_and_alertmanager(
    dagster_home: Path, tmp_path: Path
) -> None:
    """A concept message pending for 20 minutes: the exporter reports its age, Prometheus
    fires QpipeInboxStale, Alertmanager posts a Slack-compatible body to the webhook."""
    promstack.need("prometheus", "prometheus")
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp()
    inbox = open_inbox(dagster_home / "qpipe" / "inbox.sqlite")
    body = json.dumps({"concept": "stale one", "urls": ["https://example.com/a"]}).encode()
    with time_machine.travel(now - 1200, tick=False):
        inbox.append(
            InboxRecord("m-stale", body, "stale-one", "stale one", ("https://example.com/a",), None)
        )
    receiver = promstack.Receiver()
    with DagsterInstance.get() as instance:
        port = promstack.free_port()
        server, _ = serve(
            "127.0.0.1", port, build_registry(PipelineCollector(instance, clock=lambda: now))
        )
        try:
            with (
                promstack.alertmanager(tmp_path, receiver.url) as am,
                promstack.prometheus(tmp_path, {"qpipe": f"127.0.0.1:{port}"}, alertmanager=am),
            ):
                posted = promstack.wait_for(
                    lambda: [b for b in receiver.received() if "QpipeInboxStale" in json.dumps(b)],
                    120,
                    "Alertmanager to post QpipeInboxStale to the webhook",
                )
        finally:
            server.shutdown()
            receiver.close()
    attachment = posted[0]["attachments"][0]  # Slack's incoming-webhook shape
    assert attachment["title"].startswith("[FIRING] QpipeInboxStale")
    assert "A concept message has waited over 15 minutes" in attachment["text"]
    assert "20m 0s old" in attachment["text"]
    assert "docs/runbook.md#qpipeinboxstale" in attachment["text"]
    # no other rule fired on this healthy state (memory, disk, breakers, caps...)
    names = {a["title"].split()[1] for b in receiver.received() for a in b["attachments"]}
    assert names <= {"QpipeInboxStale", "QpipeNoBackup"}, names


@pytest.fixture(autouse=True)
def _no_ambient_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "QSTASH_DAILY_LIMIT",
        "MAX_CONCEPTS_PER_DAY",
        "QPIPE_INBOX_URL",
        "QPIPE_INBOX_PATH",
    ):
        monkeypatch.delenv(name, raising=False)
