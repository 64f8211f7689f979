"""The run-failure sensor posts a Slack-compatible body to QPIPE_ALERT_WEBHOOK_URL: a real
failed run in a real instance, a loopback webhook that first answers 503 (retried) and a URL
that answers 404 (reported, not retried)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    build_run_status_sensor_context,
    job,
    op,
)

from qpipe_dagster.defs.alerts import run_failure_webhook
from qpipe_dagster.monitoring.webhook import WebhookError, alert_webhook_url
from qpipe_dagster.settings import SettingError


class Hook:
    """Answers the first `fail_first` POSTs with `status`, then 200; keeps every body."""

    def __init__(self, status: int = 503, fail_first: int = 0) -> None:
        self.bodies: list[dict] = []
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.calls += 1
                code = status if outer.calls <= fail_first else 200
                if code == 200:
                    outer.bodies.append(json.loads(raw))
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"no such hook" if code == 404 else b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/x"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def failed_run(dagster_home) -> Iterator[tuple[DagsterInstance, object, object]]:
    @op
    def crawl_step() -> None:
        raise ValueError("seed URL https://example.com/x answered HTTP 410")

    @job
    def concept_pipeline() -> None:
        crawl_step()

    with DagsterInstance.get() as instance:
        result = concept_pipeline.execute_in_process(
            instance=instance,
            raise_on_error=False,
            tags={"dagster/partition": "bitcoin-halving", "qpipe/message_id": "msg_abc"},
        )
        assert not result.success
        failure = next(
            e for e in result.all_events if e.event_type == DagsterEventType.PIPELINE_FAILURE
        )
        yield instance, result.dagster_run, failure


def _evaluate(instance, run, failure):
    context = build_run_status_sensor_context(
        sensor_name="run_failure_webhook",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=run,
    ).for_run_failure()
    return run_failure_webhook(context)


def test_failed_run_is_posted_after_transient_503s(
    failed_run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = Hook(status=503, fail_first=2)
    monkeypatch.setenv("QPIPE_ALERT_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("QPIPE_UI_URL", "http://127.0.0.1:3000")
    instance, run, failure = failed_run
    try:
        assert _evaluate(instance, run, failure) is None
    finally:
        hook.server.shutdown()
    assert hook.calls == 3  # two 503s retried with backoff, then delivered once
    (body,) = hook.bodies
    assert (
        body["text"]
        == ":red_circle: qpipe run failed: concept_pipeline for concept `bitcoin-halving`"
    )
    attachment = body["attachments"][0]
    assert attachment["color"] == "danger"
    assert attachment["title_link"] == f"http://127.0.0.1:3000/runs/{run.run_id}"
    assert "crawl_step" in attachment["text"]
    fields = {f["title"]: f["value"] for f in attachment["fields"]}
    assert fields == {
        "job": "concept_pipeline",
        "run": run.run_id,
        "concept": "bitcoin-halving",
        "QStash message": "msg_abc",
    }


def test_a_wrong_url_is_reported_once_not_retried(
    failed_run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = Hook(status=404, fail_first=99)
    monkeypatch.setenv("QPIPE_ALERT_WEBHOOK_URL", hook.url)
    instance, run, failure = failed_run
    try:
        with pytest.raises(
            WebhookError,
            match=r"QPIPE_ALERT_WEBHOOK_URL at 127\.0\.0\.1 answered 404 'no such hook': check the URL",
        ):
            _evaluate(instance, run, failure)
    finally:
        hook.server.shutdown()
    assert hook.calls == 1


def test_unset_url_skips_with_the_reason(failed_run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QPIPE_ALERT_WEBHOOK_URL", raising=False)
    result = _evaluate(*failed_run)
    assert "QPIPE_ALERT_WEBHOOK_URL is not set" in result.skip_message


@pytest.mark.parametrize("value", ["slack.com/hook", "ftp://x/y", "http:///nohost"])
def test_bad_url_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingError, match=r"QPIPE_ALERT_WEBHOOK_URL=.* is invalid"):
        alert_webhook_url({"QPIPE_ALERT_WEBHOOK_URL": value})
