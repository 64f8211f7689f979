"""parse_concept_message: the shared schema, the Concept rules, and the fast path's soundness."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qpipe_dagster_tests.webhook_sensor.conftest import start_receiver
from webhook_sensor.inbox import Inbox
from webhook_sensor.payload import (
    PayloadError,
    _validator,
    fast_path_enabled,
    parse_concept_message,
    surely_valid,
)


def test_valid_message_is_normalised():
    msg = parse_concept_message(
        b'{"concept": "Bitcoin Halving!", "urls": ["https://a.example/x"], "symbol": "btc-usd",'
        b' "note": "kept"}'
    )
    assert (msg.slug, msg.normalized.symbol, msg.urls) == (
        "bitcoin-halving",
        "BTC-USD",
        ("https://a.example/x",),
    )
    assert msg.extra == {"note": "kept"}


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "empty"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not valid JSON"),
        (b'{"concept": NaN}', "NaN"),
        (b"[1]", "JSON object"),
        (b'{"urls": []}', "'concept' is a required property"),
        (b'{"concept": ""}', "concept:"),
        (b'{"concept": "---"}', "concept:"),
        (b'{"concept": "x", "urls": "https://a"}', "urls:"),
        (b'{"concept": "x", "symbol": "BTC USD"}', "symbol:"),
        (b'{"concept": "x", "urls": ["https://"]}', "urls/0:"),
        # Valid JSON that is not valid text: no UTF-8 inbox can store it, so it is refused here.
        (b'{"concept": "halving \\ud800"}', "unpaired UTF-16 surrogate"),
        (b'{"concept": "x", "urls": ["https://a.example/\\udfff"]}', "unpaired UTF-16 surrogate"),
        (b'{"concept": "x", "urls": ["https://a.example/\\u0000"]}', "control characters"),
        (b'{"concept": "x", "urls": ["http://[1::2::3]/"]}', "not a valid URL"),
    ],
)
def test_bad_messages_say_what_is_wrong(raw, says):
    with pytest.raises(PayloadError, match=says):
        parse_concept_message(raw)


def test_concept_rules_apply_after_the_schema():
    with pytest.raises(PayloadError, match="control characters"):
        parse_concept_message(b'{"concept": "bad\\u0007name"}')


def test_fast_path_is_on_for_the_shipped_schema():
    assert fast_path_enabled()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3),
    max_leaves=5,
)
_urlish = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda s, t: f"{s}://{t}", st.sampled_from(["http", "https", "ftp"]), st.text(max_size=20)
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    concept=st.one_of(st.text(max_size=220), _json_values),
    urls=st.one_of(st.none(), st.lists(_urlish, max_size=4), _json_values),
    symbol=st.one_of(
        st.none(),
        st.text(max_size=20),
        st.from_regex(r"[A-Za-z0-9]{1,15}(-[A-Z]{3})?", fullmatch=True),
    ),
    drop=st.sets(st.sampled_from(["concept", "urls", "symbol"])),
)
def test_fast_path_never_accepts_what_the_schema_rejects(concept, urls, symbol, drop):
    data = {"concept": concept, "urls": urls, "symbol": symbol}
    data = {k: v for k, v in data.items() if k not in drop}
    data = json.loads(json.dumps(data))
    if surely_valid(data):
        assert _validator().is_valid(data), data


# --- hostile bodies ----------------------------------------------------------------------------
# Hostile message bodies over HTTP and at the parser: nesting, huge values, a BOM, huge
# numbers. Each is a permanent 489 that says why, in a response and a log line of bounded size.
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
