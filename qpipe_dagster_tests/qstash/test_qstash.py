"""Publisher, local-mode delivery and the CLI, against the real receiver and a QStash emulator."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from qstash import Receiver as SdkReceiver

from qpipe_dagster.cli import main
from qpipe_dagster.qstash.client import PublishOptions, QStashClient, QStashError
from qpipe_dagster.qstash.local import DeliveryError, deliver_locally
from qpipe_dagster.qstash.resource import QStashResource
from qpipe_dagster.qstash.signing import (
    DEV_CURRENT_SIGNING_KEY,
    DEV_NEXT_SIGNING_KEY,
    sign_delivery,
)
from qpipe_dagster_tests.qstash.conftest import TOKEN
from qpipe_dagster_tests.receiver.conftest import CURRENT, NEXT, free_port, start_receiver
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
    deadline = time.time() + 10
    while inbox.get(out["messageId"]) is None and time.time() < deadline:
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
