"""The QStash client against a loopback server that answers badly on purpose.

Each test names the old behaviour it guards against. Refusals before sending are checked by the
server having seen no request at all.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate

import pytest

from qpipe_dagster.qstash.client import PublishOptions, QStashClient, QStashError, QStashInputError
from qpipe_dagster.qstash.resource import QStashResource
from qpipe_dagster_tests.qstash.scripted import Answer, ScriptedServer, json_answer
from qpipe_dagster_tests.webhook_sensor.conftest import free_port

DEST = "https://dest.example/api/qstash"
OK = json_answer(200, '{"messageId": "msg_1"}')


def _client(server: ScriptedServer, **kw: object) -> QStashClient:
    kw.setdefault("backoff_s", 0.01)
    return QStashClient("tok", server.base, **kw)  # type: ignore[arg-type]


# --- what QStash answers ------------------------------------------------------------------------
def test_json_error_body_is_shown_as_its_message(scripted: ScriptedServer) -> None:
    """Old: 'QStash answered 400: {"error":"invalid destination url"}' (the raw JSON)."""
    scripted.queue(json_answer(400, '{"error":"invalid destination url"}'))
    with _client(scripted) as c, pytest.raises(QStashError) as exc:
        c.publish_json(DEST, {"concept": "x"})
    assert str(exc.value) == "QStash answered 400: invalid destination url"
    assert len(scripted.seen) == 1  # a 4xx is not retried


def test_html_error_page_says_what_came_back(scripted: ScriptedServer) -> None:
    """Old: the first 300 characters of the HTML, tags and all."""
    page = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body>"
    scripted.queue(*[Answer(502, page, {"Content-Type": "text/html"})] * 3)
    with _client(scripted, max_retries=2) as c, pytest.raises(QStashError) as exc:
        c.publish_json(DEST, {"concept": "x"})
    msg = str(exc.value)
    assert msg.startswith("QStash answered 502 after 3 attempts: an HTML page (502 Bad Gateway)")
    assert "check QSTASH_URL" in msg and "<html" not in msg
    assert len(scripted.seen) == 3


def test_5xx_then_success_is_retried(scripted: ScriptedServer) -> None:
    scripted.queue(Answer(500, b"oops"), Answer(503, b""), OK)
    with _client(scripted) as c:
        assert c.publish_json(DEST, {"concept": "x"}) == {"messageId": "msg_1"}
    assert len(scripted.seen) == 3


def test_429_retry_after_as_http_date_is_honoured(scripted: ScriptedServer) -> None:
    """Old: an HTTP-date Retry-After was not parsed; the client retried after its own 10 ms."""
    when = formatdate(time.time() + 3, usegmt=True)
    scripted.queue(json_answer(429, '{"error":"rate limited"}', **{"Retry-After": when}), OK)
    started = time.monotonic()
    with _client(scripted) as c:
        assert c.publish_json(DEST, {"concept": "x"})["messageId"] == "msg_1"
    assert time.monotonic() - started >= 1.0  # HTTP-dates have whole seconds: 2-3 s here


@pytest.mark.parametrize("value", ["nan", "-5", "soon", ""])
def test_429_with_unusable_retry_after_falls_back_to_backoff(
    scripted: ScriptedServer, value: str
) -> None:
    """Old: Retry-After: nan reached time.sleep(nan) -> ValueError 'Invalid value NaN'."""
    scripted.queue(json_answer(429, '{"error":"rate limited"}', **{"Retry-After": value}), OK)
    started = time.monotonic()
    with _client(scripted) as c:
        assert c.publish_json(DEST, {"concept": "x"})["messageId"] == "msg_1"
    assert time.monotonic() - started < 1.0


def test_429_without_retry_after_gives_up_after_max_retries(scripted: ScriptedServer) -> None:
    scripted.queue(*[json_answer(429, '{"error":"rate limited"}')] * 5)
    with _client(scripted, max_retries=2) as c, pytest.raises(QStashError) as exc:
        c.publish_json(DEST, {"concept": "x"})
    assert str(exc.value) == "QStash answered 429 after 3 attempts: rate limited"
    assert len(scripted.seen) == 3


def test_success_that_is_not_json_is_an_error(scripted: ScriptedServer) -> None:
    """Old: publish returned the string 'ok', and `qpipe submit` died on {**'ok'} (TypeError)."""
    scripted.queue(Answer(200, b"ok", {"Content-Type": "text/plain"}))
    with _client(scripted) as c, pytest.raises(QStashError, match="not JSON: ok"):
        c.publish_json(DEST, {"concept": "x"})


@pytest.mark.parametrize(
    ("call", "body"),
    [
        ("list_schedules", '{"schedules": []}'),
        ("list_schedules", "[1, 2]"),
        ("list_dlq", "[]"),
        ("list_dlq", '{"messages": "none"}'),
        ("list_dlq", '{"messages": [1]}'),
        ("publish", '{"id": "x"}'),
        ("retry_dlq", '"done"'),
    ],
)
def test_json_of_the_wrong_shape_is_an_error(
    scripted: ScriptedServer, call: str, body: str
) -> None:
    """Old: handed on as is; the CLI then failed with AttributeError ("'str' has no 'get'")."""
    scripted.queue(json_answer(200, body))
    with _client(scripted) as c, pytest.raises(QStashError, match="not what its API returns"):
        if call == "publish":
            c.publish_json(DEST, {"concept": "x"})
        elif call == "retry_dlq":
            c.retry_dlq("dlq_1")
        else:
            getattr(c, call)()


def test_repeated_dlq_cursor_stops_instead_of_looping(scripted: ScriptedServer) -> None:
    page = '{"messages": [{"dlqId": "d1"}], "cursor": "7"}'
    scripted.queue(*[json_answer(200, page)] * 5)
    with _client(scripted) as c, pytest.raises(QStashError, match="cursor '7' twice"):
        list(c.iter_dlq())
    assert len(scripted.seen) == 2


def test_connection_refused_names_the_url_and_attempts() -> None:
    base = f"http://127.0.0.1:{free_port()}"
    client = QStashClient("tok", base, max_retries=1, backoff_s=0.01)
    with client, pytest.raises(QStashError, match=f"cannot reach QStash at {base} \\(2 attempt"):
        client.publish_json(DEST, {"concept": "x"})


def test_timeout_says_it_timed_out(scripted: ScriptedServer) -> None:
    """Old: 'cannot reach QStash ...: timed out', as if the host were down."""
    scripted.queue(Answer(200, b"{}", stall_s=1.0), Answer(200, b"{}", stall_s=1.0))
    client = _client(scripted, max_retries=1, timeout_s=0.3)
    with client, pytest.raises(QStashError, match=r"did not answer within 0.3s \(2 attempt"):
        client.publish_json(DEST, {"concept": "x"})


# --- what we would send ---------------------------------------------------------------------------
@pytest.mark.parametrize("token", ["", "   ", "\t\n"])
def test_blank_token_is_refused_before_sending(scripted: ScriptedServer, token: str) -> None:
    """Old: '   ' passed the emptiness check; every attempt failed as 'Illegal header value
    b"Bearer   "' and was retried (7.5 s) as if QStash were unreachable."""
    with pytest.raises(QStashInputError, match="QSTASH_TOKEN is empty"):
        QStashClient(token, scripted.base)
    with pytest.raises(QStashInputError, match="QSTASH_TOKEN is empty"):
        QStashResource(token=token, base_url=scripted.base).publish_json(DEST, {"concept": "x"})
    assert scripted.seen == []


def test_token_with_padding_is_trimmed(scripted: ScriptedServer) -> None:
    scripted.queue(OK)
    with QStashClient(" tok\n", scripted.base) as c:
        c.publish_json(DEST, {"concept": "x"})
    assert scripted.seen[0].headers["authorization"] == "Bearer tok"


@pytest.mark.parametrize("base", ["qstash.upstash.io", "http://[::1", "ftp://q.example", "  "])
def test_bad_base_url_names_qstash_url(base: str) -> None:
    """Old: 'http://[::1' raised httpx.InvalidURL (a traceback); a URL without a scheme was
    retried as unreachable."""
    with pytest.raises(QStashInputError, match="QSTASH_URL"):
        QStashClient("tok", base)


def test_negative_max_retries_is_refused() -> None:
    """Old: range(0) made no attempt and hit `raise AssertionError("unreachable")`."""
    with pytest.raises(QStashInputError, match="max_retries must be at least 0"):
        QStashResource(token="tok", max_retries=-1).get_client()


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"delay": -5}, "delay -5 is negative"),
        ({"delay": "-5s"}, "delay '-5s' is negative"),
        ({"delay": True}, "delay must be whole seconds"),
        ({"delay": 1.5}, "delay must be whole seconds"),
        ({"delay": "soon"}, "delay 'soon' is not a delay"),
        ({"delay": "5 minutes"}, "delay '5 minutes' is not a delay"),
        ({"delay": "99999d"}, "more than 10 years"),
        ({"not_before": 1_900_000_000_000}, "not_before (unix seconds) must be at least 0"),
        ({"retries": -1}, "retries must be at least 0"),
        ({"deduplication_id": "a\nb"}, "deduplication_id 'a\\nb' contains '\\n'"),
        ({"deduplication_id": "café"}, "deduplication_id 'café' contains 'é'"),
        ({"deduplication_id": " padded"}, "starts or ends with a space"),
        ({"callback": "not a url"}, "callback 'not a url'"),
        ({"failure_callback": "ftp://x/"}, "failure_callback 'ftp://x/' must be an http"),
        ({"flow_control_rate": 5}, "flow_control_rate needs flow_control_key"),
        ({"flow_control_key": "k", "flow_control_parallelism": 0}, "at least 1"),
        ({"forward_headers": {"X Bad": "v"}}, "not a valid HTTP header name"),
        ({"forward_headers": {"X-Ok": "line\r\nInjected: 1"}}, "forward_headers['X-Ok']"),
    ],
)
def test_bad_options_are_refused_naming_the_field(kwargs: dict, named: str) -> None:
    """Old: sent as is (QStash's 400, or silently dropped: a rate without a key), or raised from
    httpx: UnicodeEncodeError for non-ASCII, 'Illegal header value' retried as unreachable."""
    with pytest.raises(QStashInputError) as exc:
        PublishOptions(**kwargs)
    assert named in str(exc.value)


@pytest.mark.parametrize(("delay", "header"), [(0, "0s"), (90, "90s"), ("30", "30s"), ("7d", "7d")])
def test_good_delays_are_sent_with_a_unit(
    scripted: ScriptedServer, delay: int | str, header: str
) -> None:
    scripted.queue(OK)
    with _client(scripted) as c:
        c.publish_json(DEST, {"concept": "x"}, PublishOptions(delay=delay))
    assert scripted.seen[0].headers["upstash-delay"] == header


@pytest.mark.parametrize(
    ("cron", "named"),
    [
        ("", "cron is empty"),
        ("61 * * *", "has 4 fields; expected 5"),
        ("61 * * * *", "minute field: 61 is out of range 0-59"),
        ("0 24 * * *", "hour field: 24 is out of range 0-23"),
        ("0 6 0 * *", "day of month field: 0 is out of range 1-31"),
        ("0 6 * 13 *", "month field: 13 is out of range 1-12"),
        ("0 6 * * 8", "day of week field: 8 is out of range 0-7"),
        ("0 6 * * FUNDAY", "day of week field: 'FUNDAY' is not a number"),
        ("*/0 * * * *", "minute field: step '0'"),
        ("0 9-5 * * *", "hour field: range '9-5' runs backwards"),
        ("0 6 * * *\n", "contains '\\\\n'"),
        ("CRON_TZ=Mars/Base 0 6 * * *", "CRON_TZ='Mars/Base' is not an IANA time zone"),
    ],
)
def test_invalid_cron_is_refused_before_sending(
    scripted: ScriptedServer, cron: str, named: str
) -> None:
    """Old: sent to QStash whatever it was."""
    with _client(scripted) as c, pytest.raises(QStashInputError, match=named):
        c.create_schedule(DEST, cron, b'{"concept": "x"}')
    assert scripted.seen == []


@pytest.mark.parametrize(
    "cron",
    ["0 6 * * *", "*/15 0-23/2 1,15 JAN-JUN mon-fri", "0 0 * * 7", "CRON_TZ=America/New_York 0 4 * * *",
     "@daily"],
)  # fmt: skip
def test_valid_cron_is_sent_unchanged(scripted: ScriptedServer, cron: str) -> None:
    scripted.queue(json_answer(200, '{"scheduleId": "scd_1"}'))
    with _client(scripted) as c:
        assert c.create_schedule(DEST, cron, b"{}")["scheduleId"] == "scd_1"
    assert scripted.seen[0].headers["upstash-cron"] == cron


@pytest.mark.parametrize("call", ["delete_schedule", "delete_dlq", "retry_dlq"])
@pytest.mark.parametrize("bad_id", ["", "  ", "a\nb"])
def test_blank_or_unsendable_ids_are_refused(
    scripted: ScriptedServer, call: str, bad_id: str
) -> None:
    """Old: '' hit the collection itself (DELETE /v2/schedules/), answered 405 or worse."""
    with _client(scripted) as c, pytest.raises(QStashInputError, match="id"):
        getattr(c, call)(bad_id)
    assert scripted.seen == []


def test_blank_schedule_id_is_refused_not_ignored(scripted: ScriptedServer) -> None:
    """Old: schedule_id='' was dropped, creating a new schedule instead of updating one."""
    with _client(scripted) as c, pytest.raises(QStashInputError, match="schedule id is empty"):
        c.create_schedule(DEST, "0 6 * * *", b"{}", schedule_id="")
    assert scripted.seen == []


# --- batches ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (("https://b.example/", b"\xff\xfe", None), "batch item 1 (https://b.example/): body is not UTF-8"),
        (("not a url", b"{}", None), "batch item 1: destination 'not a url'"),
    ],
)  # fmt: skip
def test_batch_with_one_bad_item_sends_nothing(
    scripted: ScriptedServer, bad: tuple, named: str
) -> None:
    """Old: a raw UnicodeDecodeError (no item named); a bad destination went out with the rest."""
    items = [("https://a.example/", b'{"concept": "a"}', None), bad,
             ("https://c.example/", b'{"concept": "c"}', None)]  # fmt: skip
    with _client(scripted) as c, pytest.raises(QStashInputError, match=re.escape(named)) as exc:
        c.batch(items)
    assert "Nothing was sent" in str(exc.value) or "nothing was sent" in str(exc.value)
    assert scripted.seen == []


def test_batch_items_qstash_refuses_are_named_with_the_published_ids(
    scripted: ScriptedServer,
) -> None:
    """Old: the answer list came back as is; a caller counting results saw three "results"."""
    scripted.queue(json_answer(200, '[{"messageId": "m0"}, {"error": "invalid destination"},'
                                    ' {"messageId": "m2"}]'))  # fmt: skip
    items = [(f"https://{n}.example/", b"{}", None) for n in "abc"]
    with _client(scripted) as c, pytest.raises(QStashError) as exc:
        c.batch(items)
    assert str(exc.value) == (
        "QStash refused 1 of 3 batch items: item 1 (https://b.example/): invalid destination."
        " Published: item 0: m0, item 2: m2"
    )


def test_batch_answer_of_the_wrong_length_is_an_error(scripted: ScriptedServer) -> None:
    scripted.queue(json_answer(200, '[{"messageId": "m0"}]'))
    with _client(scripted) as c, pytest.raises(QStashError, match="a JSON array of 2 results"):
        c.batch([("https://a.example/", b"{}", None), ("https://b.example/", b"{}", None)])


def test_empty_batch_is_refused(scripted: ScriptedServer) -> None:
    with _client(scripted) as c, pytest.raises(QStashInputError, match="batch is empty"):
        c.batch([])
    assert scripted.seen == []


def test_retried_publish_keeps_one_deduplication_id(scripted: ScriptedServer) -> None:
    """Old: no deduplication id unless the caller gave one, so a publish QStash stored but whose
    answer was lost (a 5xx from a proxy, a timeout) was retried as a second message: two runs."""
    scripted.queue(Answer(502, b"bad gateway"), OK, OK, OK, OK)
    with _client(scripted) as c:
        c.publish_json(DEST, {"concept": "x"})
        c.publish_json(DEST, {"concept": "x"})
        c.publish_json(DEST, {"concept": "x"}, PublishOptions(deduplication_id="mine"))
        c.publish_json(DEST, {"concept": "x"}, PublishOptions(content_based_deduplication=True))
    ids = [s.headers.get("upstash-deduplication-id") for s in scripted.seen]
    assert ids[0] == ids[1] and ids[0].startswith("qpipe-")  # one message, retried
    assert ids[2] not in (None, ids[0])  # a second publish is a second message
    assert ids[3] == "mine" and ids[4] is None  # the caller's choice wins


def test_batch_items_each_get_their_own_deduplication_id(scripted: ScriptedServer) -> None:
    import json

    scripted.queue(json_answer(200, '[{"messageId": "a"}, {"messageId": "b"}]'))
    with _client(scripted) as c:
        c.batch([(DEST, b'{"concept":"a"}', None), (DEST, b'{"concept":"b"}', None)])
    items = json.loads(scripted.seen[0].body)
    ids = [item["headers"]["Upstash-Deduplication-Id"] for item in items]
    assert len(set(ids)) == 2 and all(i.startswith("qpipe-") for i in ids)
