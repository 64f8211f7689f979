"""Hostile message bodies over HTTP and at the parser: nesting, huge values, a BOM, huge
numbers. Each is a permanent 489 that says why, in a response and a log line of bounded size."""

from __future__ import annotations

import json
import sys

import pytest

from qpipe_dagster_tests.receiver.conftest import start_receiver
from webhook_sensor.inbox import Inbox
from webhook_sensor.payload import PayloadError, parse_concept_message


def test_deeply_nested_body_is_a_permanent_489_not_a_retried_500(receiver):
    body = b'{"concept": "deep", "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    resp = receiver.signed(body, message_id="msg_deep_body")
    assert resp.status_code == 489, resp.text
    assert resp.headers["Upstash-NonRetryable-Error"] == "true"
    assert "nested too deeply" in resp.json()["detail"]
    assert Inbox(receiver.settings.inbox_path).get("msg_deep_body") is None


@pytest.mark.parametrize("field", ["urls", "symbol", "extra"])
def test_nesting_at_the_recursion_limit_is_a_payload_error(field):
    """Around the interpreter's limit the decoder may just succeed and jsonschema's message
    (which quotes the value) then recurse past it: every depth must end in PayloadError."""
    limit = sys.getrecursionlimit()
    for depth in range(limit - 400, limit + 20):
        raw = b'{"concept": "x", "%s": %s%s}' % (field.encode(), b"[" * depth, b"]" * depth)
        try:
            parse_concept_message(raw)
        except PayloadError:
            continue
        assert field == "extra"  # unknown fields are kept as they are, at any legal depth


def test_huge_rejected_value_is_not_echoed_whole(tmp_path, capfd):
    """jsonschema quotes the offending value: a 500 KB concept came back as a 500 KB response
    body and a 500 KB log line."""
    server, rcv = start_receiver(tmp_path)
    with server:
        resp = rcv.signed(b'{"concept": "' + b"a" * 500_000 + b'"}', message_id="msg_huge")
    rcv.client.close()
    assert resp.status_code == 489 and len(resp.content) < 1000
    detail = resp.json()["detail"]
    assert detail.startswith("concept: 'aaa") and "more characters" in detail
    line = next(x for x in capfd.readouterr().err.splitlines() if '"payload_rejected"' in x)
    assert len(line) < 1000 and json.loads(line)["correlation_id"] == "msg_huge"


@pytest.mark.parametrize(
    ("raw", "says", "not_says"),
    [
        (b'\xef\xbb\xbf{"concept": "x"}', "byte-order mark", "line 1 column 1"),
        (b'{"concept": "x", "n": ' + b"9" * 5000 + b"}", "more than 4300 digits",
         "set_int_max_str_digits"),
    ],
    ids=["bom", "5000-digit-number"],
)  # fmt: skip
def test_undecodable_bodies_say_why_in_the_senders_terms(raw, says, not_says):
    with pytest.raises(PayloadError) as err:
        parse_concept_message(raw)
    assert says in str(err.value) and not_says not in str(err.value)
