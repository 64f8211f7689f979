"""`qpipe submit / dlq / schedules` given bad arguments, bad settings and bad answers.

Usage errors exit 2 naming the option before any request; a receiver or QStash that answers
badly is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qpipe_dagster.cli import main
from qpipe_dagster.cli import qstash as cli_qstash
from qpipe_dagster_tests.qstash.scripted import Answer, ScriptedServer, json_answer

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
