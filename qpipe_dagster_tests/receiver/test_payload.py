"""parse_concept_message: the shared schema, the Concept rules, and the fast path's soundness."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
