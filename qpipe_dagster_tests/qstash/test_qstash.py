"""Publisher, local-mode delivery and the CLI, against the real receiver and a QStash emulator."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from qstash import Receiver as SdkReceiver

from qpipe_dagster.cli import main
from qpipe_dagster.cli import qstash as cli_qstash
from qpipe_dagster.qstash.client import PublishOptions, QStashClient, QStashError
from qpipe_dagster.qstash.local import DeliveryError, deliver_locally
from qpipe_dagster.qstash.resource import QStashResource
from qpipe_dagster.qstash.signing import (
    DEV_CURRENT_SIGNING_KEY,
    DEV_NEXT_SIGNING_KEY,
    sign_delivery,
)
from qpipe_dagster_tests.qstash.conftest import TOKEN
from qpipe_dagster_tests.qstash.scripted import Answer, ScriptedServer, json_answer
from qpipe_dagster_tests.webhook_sensor.conftest import CURRENT, NEXT, free_port, start_receiver
from webhook_sensor.inbox import Inbox
from webhook_sensor.settings import Settings
from webhook_sensor.verify import SignatureVerifier


@pytest.fixture
def no_qstash_env(monkeypatch):
    for var in ("QSTASH_TOKEN", "QSTASH_URL", "QSTASH_CURRENT_SIGNING_KEY", "QPIPE_RECEIVER_URL"):
        monkeypatch.delenv(var, raising=False)


def test_sign_delivery_is_accepted_by_the_sdk_and_by_us():
    url = "https://qpipe.example.com/api/qstash"
    body = b'{"concept": "signed"}'
    token = sign_delivery(DEV_CURRENT_SIGNING_KEY, url, body)
    SdkReceiver(DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY).verify(
        signature=token, body=body.decode(), url=url
    )
    claims = SignatureVerifier(DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, url).verify(
        token, body
    )
    assert claims["nbf"] == 0 and claims["exp"] - claims["iat"] == 300


def test_local_submit_with_dev_keys_reaches_the_inbox(tmp_path, no_qstash_env, capsys):
    server, rcv = start_receiver(
        tmp_path,
        current_signing_key=Settings().current_signing_key,
        next_signing_key=Settings().next_signing_key,
    )
    with server:
        rc = main(["submit", "Demo Two", "--url", "http://127.0.0.1:9/", "--symbol", "btc-usd",
                   "--receiver-url", rcv.url])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["mode"] == "local" and out["status"] == "stored"
    stored = Inbox(rcv.settings.inbox_path).get(out["message_id"])
    assert stored.slug == "demo-two" and stored.symbol == "BTC-USD"


def test_local_submit_rejects_bad_input_before_sending(tmp_path, no_qstash_env, capsys):
    rc = main(["submit", "x", "--url", "ftp://nope", "--receiver-url", "http://127.0.0.1:9/"])
    assert rc == 2 and "urls/0" in capsys.readouterr().err


def test_local_submit_with_wrong_keys_retries_then_fails_clearly(live_receiver, no_qstash_env):
    with pytest.raises(DeliveryError, match=r"401.*bad_signature") as exc:
        deliver_locally(live_receiver.url, b'{"concept": "x"}', signing_key="sig_" + "z" * 28,
                        retries=2, backoff_s=0.01)  # fmt: skip
    assert "not accepted after 3 attempt(s)" in str(exc.value)


def test_local_delivery_stops_on_non_retryable(live_receiver):
    started = time.time()
    with pytest.raises(DeliveryError, match="489"):
        deliver_locally(live_receiver.url, b"not json", signing_key=CURRENT, retries=5,
                        backoff_s=1.0)  # fmt: skip
    assert time.time() - started < 1.0  # no backoff sleeps: QStash would not retry either


def test_local_delivery_reports_unreachable_receiver(no_qstash_env, capsys):
    url = f"http://127.0.0.1:{free_port()}/api/qstash"
    rc = main(["submit", "x", "--receiver-url", url, "--retries", "1", "--backoff", "0.01"])
    assert rc == 2 and "cannot reach the receiver" in capsys.readouterr().err


def test_redelivery_with_same_id_is_a_duplicate(live_receiver):
    body = b'{"concept": "again"}'
    first = deliver_locally(live_receiver.url, body, signing_key=NEXT, message_id="msg_same")
    second = deliver_locally(live_receiver.url, body, signing_key=NEXT, message_id="msg_same")
    assert (first.response["status"], second.response["status"]) == ("stored", "duplicate")


def test_submit_through_qstash_is_delivered_to_the_receiver(
    live_receiver, qstash_emulator, monkeypatch, capsys
):
    monkeypatch.setenv("QSTASH_TOKEN", TOKEN)
    monkeypatch.setenv("QSTASH_URL", qstash_emulator.base)
    monkeypatch.setenv("QPIPE_RECEIVER_URL", live_receiver.url)
    qstash_emulator.throttle_next = 1  # a 429 first: the client must back off and retry
    rc = main(["submit", "Via QStash", "--url", "https://example.com/a", "--delay", "10s",
               "--dedup-id", "dedup-1"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["mode"] == "qstash" and out["messageId"].startswith("msg_emu_")
    sent = qstash_emulator.published[0]
    assert sent["dest"] == live_receiver.url
    assert sent["headers"]["upstash-delay"] == "10s"
    assert sent["headers"]["upstash-deduplication-id"] == "dedup-1"
    inbox = Inbox(live_receiver.settings.inbox_path)
    deadline = time.monotonic() + 10
    # The row is committed before the receiver's 200 reaches the emulator: wait for both.
    while (
        inbox.get(out["messageId"]) is None or not qstash_emulator.deliveries
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert inbox.get(out["messageId"]).slug == "via-qstash"
    assert qstash_emulator.deliveries == [200]


def test_publish_options_map_to_upstash_headers(qstash_emulator):
    opts = PublishOptions(
        delay=30, not_before=1_900_000_000, retries=2, deduplication_id="d1",
        callback="https://cb.example/ok", failure_callback="https://cb.example/fail",
        flow_control_key="crawl", flow_control_parallelism=2, flow_control_rate=10,
        label="qpipe", forward_headers={"X-Trace": "t1"},
    )  # fmt: skip
    with QStashClient(TOKEN, qstash_emulator.base) as client:
        client.publish_json("https://dest.example/api", {"concept": "x"}, opts)
        batch = client.batch([("https://a.example/", b'{"concept": "a"}', None),
                              ("https://b.example/", b'{"concept": "b"}', opts)])  # fmt: skip
    h = qstash_emulator.published[0]["headers"]
    assert h["upstash-delay"] == "30s" and h["upstash-not-before"] == "1900000000"
    assert h["upstash-retries"] == "2" and h["upstash-callback"] == "https://cb.example/ok"
    assert h["upstash-failure-callback"] == "https://cb.example/fail"
    assert h["upstash-flow-control-key"] == "crawl"
    assert h["upstash-flow-control-value"] == "parallelism=2, rate=10"
    assert h["upstash-forward-x-trace"] == "t1" and h["upstash-label"] == "qpipe"
    assert len(batch) == 2 and qstash_emulator.batches[0][1]["destination"] == "https://b.example/"


def test_client_gives_up_after_persistent_429(qstash_emulator):
    qstash_emulator.throttle_next = 10
    client = QStashClient(TOKEN, qstash_emulator.base, max_retries=2, backoff_s=0.01)
    with client, pytest.raises(QStashError, match="429"):
        client.publish_json("https://dest.example/", {"concept": "x"})
    assert qstash_emulator.throttle_next == 7


def test_wrong_token_is_a_clear_error(qstash_emulator):
    client = QStashClient("wrong", qstash_emulator.base)
    with client, pytest.raises(QStashError, match="401"):
        client.publish_json("https://dest.example/", {"concept": "x"})


def test_resource_publishes(qstash_emulator):
    resource = QStashResource(token=TOKEN, base_url=qstash_emulator.base)
    assert resource.publish_json("https://dest.example/", {"concept": "r"})["messageId"]


def test_dlq_and_schedules_commands(qstash_emulator, monkeypatch, capsys):
    monkeypatch.setenv("QSTASH_TOKEN", TOKEN)
    monkeypatch.setenv("QSTASH_URL", qstash_emulator.base)
    for i in range(3):
        qstash_emulator.dlq[f"dlq_{i}"] = {"dlqId": f"dlq_{i}", "messageId": f"m{i}",
                                           "url": "https://r/", "responseStatus": 489}  # fmt: skip
    assert main(["dlq", "list"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [m["dlqId"] for m in listed] == ["dlq_0", "dlq_1", "dlq_2"]  # followed the cursor
    assert main(["dlq", "retry", "dlq_0"]) == 0 and qstash_emulator.retried == ["dlq_0"]
    assert main(["dlq", "delete", "dlq_1"]) == 0 and set(qstash_emulator.dlq) == {"dlq_2"}
    assert main(["dlq", "delete", "dlq_missing"]) == 2
    assert "404" in capsys.readouterr().err

    assert main(["schedules", "create", "Daily BTC", "--cron", "0 6 * * *", "--url",
                 "https://example.com/", "--schedule-id", "daily-btc",
                 "--receiver-url", "https://qpipe.example.com/api/qstash"]) == 0  # fmt: skip
    sched = qstash_emulator.schedules["daily-btc"]
    assert sched["cron"] == "0 6 * * *" and json.loads(sched["body"])["concept"] == "Daily BTC"
    capsys.readouterr()
    assert main(["schedules", "list"]) == 0
    assert json.loads(capsys.readouterr().out)["scheduleId"] == "daily-btc"
    assert main(["schedules", "delete", "daily-btc"]) == 0 and not qstash_emulator.schedules


def test_dlq_without_token_says_what_to_set(no_qstash_env, capsys):
    assert main(["dlq", "list"]) == 2
    assert "QSTASH_TOKEN is not set" in capsys.readouterr().err


def test_settings_from_env_defaults_and_errors():
    s = Settings.from_env({})
    assert s.using_dev_keys and s.current_signing_key == DEV_CURRENT_SIGNING_KEY
    assert s.receiver_url == "http://127.0.0.1:8766/api/qstash"
    custom = Settings.from_env(
        {"QSTASH_CURRENT_SIGNING_KEY": CURRENT, "QSTASH_NEXT_SIGNING_KEY": NEXT}
    )
    assert custom == replace(custom, current_signing_key=CURRENT, next_signing_key=NEXT)
    assert not custom.using_dev_keys
    for env, name in (
        ({"QPIPE_RECEIVER_RATE_LIMIT": "fast"}, "QPIPE_RECEIVER_RATE_LIMIT"),
        ({"QPIPE_RECEIVER_MAX_BODY_BYTES": "0"}, "QPIPE_RECEIVER_MAX_BODY_BYTES"),
        ({"QPIPE_RECEIVER_URL": "ftp://x"}, "QPIPE_RECEIVER_URL"),
        ({"QSTASH_NEXT_SIGNING_KEY": NEXT}, "QSTASH_CURRENT_SIGNING_KEY"),
        ({"QPIPE_INBOX_URL": "mysql://u:secret@db/q"}, "QPIPE_INBOX_URL"),
    ):
        with pytest.raises(ValueError, match=name) as exc:
            Settings.from_env(env)
        assert "secret" not in str(exc.value)


# --- CLI given bad input -----------------------------------------------------------------------
# `qpipe submit / dlq / schedules` given bad arguments, bad settings and bad answers.
#
# Usage errors exit 2 naming the option before any request; a receiver or QStash that answers
# badly is one line on stderr and a non-zero exit, never a traceback.
ENV = ("QSTASH_TOKEN", "QSTASH_URL", "QSTASH_CURRENT_SIGNING_KEY", "QPIPE_RECEIVER_URL")


@pytest.fixture
def qstash_env(scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> ScriptedServer:
    """QStash mode, pointed at the scripted server."""
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("QSTASH_TOKEN", "tok")
    monkeypatch.setenv("QSTASH_URL", scripted.base)
    return scripted


@pytest.fixture
def local_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV:
        monkeypatch.delenv(var, raising=False)


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["submit", "x", "--receiver-url", "ftp://r/"], "argument --receiver-url: value 'ftp://r/' must be an http"),
        (["submit", "x", "--receiver-url", "http://[::1"], "argument --receiver-url: value 'http://[::1' is not a valid URL"),
        (["submit", "x", "--receiver-url", ""], "argument --receiver-url: value is empty"),
        (["submit", "x", "--delay=-5s"], "argument --delay: value '-5s' is negative"),
        (["submit", "x", "--delay", "soon"], "argument --delay: value 'soon' is not a delay"),
        (["submit", "x", "--delay", "99999d"], "argument --delay: value '99999d' is more than 10 years"),
        (["submit", "x", "--dedup-id", "café"], "argument --dedup-id: value 'café' contains 'é'"),
        (["submit", "x", "--dedup-id", "a\nb"], "argument --dedup-id: value 'a\\nb' contains '\\n'"),
        (["submit", "x", "--dedup-id", "d" * 201], "argument --dedup-id: value is 201 characters long; at most 200"),
        (["submit", "x", "--retries", "99999"], "argument --retries: '99999' is not a whole number from 0 to 10"),
        (["submit", "x", "--retries", "²"], "argument --retries: '²' is not a whole number"),
        (["schedules", "create", "x", "--cron", "0 25 * * *"], "argument --cron: value '0 25 * * *': hour field: 25 is out of range 0-23"),
        (["schedules", "create", "x", "--cron", "daily"], "argument --cron: value 'daily' has 1 fields; expected 5"),
        (["schedules", "create", "x", "--cron", "0 6 * * *", "--schedule-id", " "], "argument --schedule-id: value is empty"),
        (["schedules", "delete", ""], "argument schedule_id: value is empty"),
        (["dlq", "retry", "dlq_1", " "], "argument DLQ_ID: value is empty"),
        (["dlq", "delete", "a b\n"], "argument DLQ_ID: value 'a b\\n' contains '\\n'"),
    ],
)  # fmt: skip
def test_bad_arguments_are_usage_errors_naming_the_option(
    qstash_env: ScriptedServer, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    """Old: sent as is (QStash's 400 or the receiver's 489), retried as "cannot reach" (newline in
    an id), a UnicodeEncodeError line (non-ASCII id), an OverflowError traceback (--retries
    99999), httpx.InvalidURL traceback ('http://[::1'), or DELETE /v2/schedules/ for ''."""
    err = _usage_error(argv, capsys)
    assert expected in err
    assert qstash_env.seen == []


def test_bad_receiver_url_env_is_named(
    local_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QPIPE_RECEIVER_URL", "http://[::1")
    assert main(["submit", "x", "--retries", "0"]) == 2
    assert "qpipe: error: QPIPE_RECEIVER_URL 'http://[::1' is not a valid URL" in (
        capsys.readouterr().err
    )


def test_blank_receiver_url_env_means_the_default(
    local_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Old: '  ' was used as the URL ('missing an http:// or https:// protocol')."""
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        default = f"http://127.0.0.1:{closed.getsockname()[1]}/api/qstash"
        monkeypatch.setattr(cli_qstash, "DEFAULT_RECEIVER_URL", default)
        monkeypatch.setenv("QPIPE_RECEIVER_URL", "  ")
        assert main(["submit", "x", "--retries", "0", "--receiver-url", default + "x"]) == 2
        assert default + "x" in capsys.readouterr().err  # the option still wins
        assert main(["submit", "x", "--retries", "0"]) == 2
        assert default in capsys.readouterr().err


@pytest.mark.parametrize("value", ["qstash.upstash.io", "http://[::1"])
def test_bad_qstash_url_is_named_at_once(
    qstash_env: ScriptedServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    value: str,
) -> None:
    """Old: no scheme was retried for 7.5 s as 'cannot reach QStash'; a bad port a traceback."""
    monkeypatch.setenv("QSTASH_URL", value)
    started = time.monotonic()
    assert main(["dlq", "list"]) == 2
    assert f"QStash URL (QSTASH_URL) {value!r}" in capsys.readouterr().err
    assert time.monotonic() - started < 2


def test_blank_qstash_url_means_the_default(
    qstash_env: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qpipe_dagster.cli.qstash import _client

    monkeypatch.setenv("QSTASH_URL", "   ")
    with _client() as client:
        assert client.base_url == "https://qstash.upstash.io"


# --- local mode: what the receiver answers ----------------------------------------------------
def _submit_local(server: ScriptedServer, *extra: str) -> int:
    return main(["submit", "x", "--mode", "local", "--receiver-url", server.base + "/api/qstash",
                 "--backoff", "0.01", *extra])  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body"), [(401, '{"error":"bad_signature"}'), (413, '{"error":"body_too_large"}'),
                         (404, '{"detail":"Not Found"}')],
)  # fmt: skip
def test_local_4xx_is_retried_like_qstash(
    local_env: None,
    scripted: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    status: int,
    body: str,
) -> None:
    """QStash retries every non-2xx but a non-retryable 489 (a 401 while keys are being rotated
    succeeds later); local mode does the same, a bounded number of times, and says so."""
    scripted.queue(*[json_answer(status, body)] * 4)
    assert _submit_local(scripted, "--retries", "2") == 2
    err = capsys.readouterr().err
    assert f"not accepted after 3 attempt(s): receiver answered {status}" in err
    assert len(scripted.seen) == 3


def test_local_5xx_is_retried_a_bounded_number_of_times(
    local_env: None, scripted: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted.queue(*[Answer(500, b"<html>boom</html>", {"Content-Type": "text/html"})] * 10)
    assert _submit_local(scripted, "--retries", "2") == 2
    assert "not accepted after 3 attempt(s): receiver answered 500" in capsys.readouterr().err
    assert len(scripted.seen) == 3
    ids = {s.headers["upstash-message-id"] for s in scripted.seen}
    assert len(ids) == 1  # like QStash: one message id for every attempt
    assert [s.headers["upstash-retried"] for s in scripted.seen] == ["0", "1", "2"]


@pytest.mark.parametrize("first", [429, 408, 503])
def test_local_retryable_answer_then_success(
    local_env: None, scripted: ScriptedServer, capsys: pytest.CaptureFixture[str], first: int
) -> None:
    scripted.queue(
        json_answer(first, '{"error":"later"}', **{"Retry-After": "0"}),
        json_answer(200, '{"status":"stored","message_id":"m","concept":"x"}'),
    )
    assert _submit_local(scripted, "--retries", "3") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["attempts"] == 2 and out["status"] == "stored"


# --- QStash mode: what QStash answers ---------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "answer", "expected"),
    [
        (["submit", "x", "--mode", "qstash"], Answer(200, b"ok"), "not JSON: ok"),
        (["schedules", "list"], json_answer(200, '{"a": 1}'), "answer to list schedules"),
        (["schedules", "list"], Answer(200, b"<html><title>Login</title></html>",
                                       {"Content-Type": "text/html"}), "an HTML page (Login)"),
        (["dlq", "list"], json_answer(200, "[1, 2]"), "answer to list DLQ"),
        (["dlq", "list"], json_answer(200, '{"messages": [1]}'), "answer to list DLQ"),
        (["dlq", "retry", "d1"], json_answer(200, '"ok"'), "answer to retry DLQ message"),
    ],
)  # fmt: skip
def test_malformed_qstash_answers_are_one_line(
    qstash_env: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    answer: Answer,
    expected: str,
) -> None:
    """Old: AttributeError / TypeError tracebacks ("'str' object has no attribute 'get'")."""
    qstash_env.queue(answer)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("qpipe: error: ") and expected in err


def test_dlq_list_stops_on_a_repeated_cursor(
    qstash_env: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Old: followed the same cursor for ever, printing the same page each time."""
    page = json_answer(200, '{"messages": [{"dlqId": "d1"}], "cursor": "c1"}')
    qstash_env.queue(*[page] * 6)
    assert main(["dlq", "list"]) == 2
    captured = capsys.readouterr()
    assert "cursor 'c1' twice" in captured.err
    assert len(captured.out.splitlines()) == 2 and len(qstash_env.seen) == 2


# --- the real process ---------------------------------------------------------------------------
def _qpipe(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    return subprocess.Popen(
        [sys.executable, "-m", "qpipe_dagster.cli", *args], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip


def test_invalid_receiver_url_exits_2_without_traceback() -> None:
    """Old: httpx.InvalidURL traceback, exit 1."""
    proc = _qpipe("submit", "x", "--receiver-url", "http://[::1")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "Traceback" not in err
    assert "argument --receiver-url" in err


def test_ctrl_c_during_retries_exits_130_in_one_line(scripted: ScriptedServer) -> None:
    """Old: a KeyboardInterrupt traceback from time.sleep in the retry loop."""
    scripted.queue(*[json_answer(500, '{"error":"down"}')] * 4)
    proc = _qpipe("submit", "x", "--receiver-url", scripted.base + "/api/qstash",
                  "--retries", "3", "--backoff", "20")  # fmt: skip
    deadline = time.monotonic() + 60
    while not scripted.seen and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first attempt has been answered: it now sleeps 20 s
    assert len(scripted.seen) == 1
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "qpipe: interrupted" and "Traceback" not in err
