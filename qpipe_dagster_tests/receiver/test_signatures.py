"""The signature matrix: every case is a real HTTP request to the running receiver."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from qpipe_dagster_tests.receiver.conftest import CURRENT, NEXT, make_token
from webhook_sensor.inbox import Inbox

BODY = b'{"concept": "Bitcoin Halving", "urls": ["https://example.com/a"], "symbol": "btc-usd"}'


def _reason(resp) -> str:
    assert resp.status_code == 401, resp.text
    return resp.json()["error"]


def test_valid_current_key_is_stored(receiver):
    resp = receiver.signed(BODY, message_id="msg_valid_current")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "status": "stored",
        "message_id": "msg_valid_current",
        "concept": "bitcoin-halving",
    }
    stored = Inbox(receiver.settings.inbox_path).get("msg_valid_current")
    assert stored is not None and stored.slug == "bitcoin-halving"
    assert stored.symbol == "BTC-USD" and stored.seed_urls == ("https://example.com/a",)


def test_valid_next_key_only(receiver):
    assert receiver.signed(BODY, key=NEXT).status_code == 200


def test_unknown_key_is_bad_signature(receiver):
    assert (
        _reason(receiver.signed(BODY, key="sig_SomeoneElse0123456789abcdefgh")) == "bad_signature"
    )


def test_expired_beyond_tolerance(receiver):
    now = time.time()
    assert _reason(receiver.signed(BODY, iat=int(now - 400), exp=int(now - 40))) == "expired"


def test_expired_within_tolerance_is_accepted(receiver):
    now = time.time()
    assert receiver.signed(BODY, iat=int(now - 310), exp=int(now - 10)).status_code == 200


def test_not_yet_valid_beyond_tolerance(receiver):
    now = time.time()
    assert _reason(receiver.signed(BODY, nbf=int(now + 120))) == "not_yet_valid"


def test_future_iat_within_tolerance_is_accepted(receiver):
    now = time.time()
    assert receiver.signed(BODY, iat=int(now + 5), exp=int(now + 305)).status_code == 200


def test_future_iat_beyond_tolerance_is_rejected(receiver):
    now = time.time()
    assert _reason(receiver.signed(BODY, iat=int(now + 120), exp=int(now + 420))) == (
        "issued_in_future"
    )


def test_wrong_issuer(receiver):
    assert _reason(receiver.signed(BODY, iss="Someone")) == "wrong_issuer"


def test_wrong_subject(receiver):
    assert _reason(receiver.signed(BODY, sub="https://evil.example/api/qstash")) == "wrong_subject"


def test_subject_trailing_slash_is_normalised(receiver):
    assert receiver.signed(BODY, sub=receiver.url + "/").status_code == 200


def test_missing_exp_is_rejected(receiver):
    assert _reason(receiver.signed(BODY, exp=None)) == "missing_claim"


def test_tampered_body(receiver):
    token = make_token(CURRENT, receiver.url, BODY)
    tampered = BODY.replace(b"Bitcoin", b"Dogecoin")
    assert _reason(receiver.post(tampered, token)) == "body_hash_mismatch"


def test_reserialised_body_is_rejected(receiver):
    token = make_token(CURRENT, receiver.url, BODY)
    reserialised = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
    assert reserialised != BODY
    assert _reason(receiver.post(reserialised, token)) == "body_hash_mismatch"


def test_unpadded_body_claim_is_accepted(receiver):
    claim = make_token(CURRENT, receiver.url, BODY)
    payload = jwt.decode(claim, options={"verify_signature": False})
    assert _reason(receiver.signed(BODY, body=payload["body"] + "x")) == "body_hash_mismatch"
    assert receiver.signed(BODY, body=payload["body"].rstrip("=")).status_code == 200


def test_missing_header(receiver):
    assert _reason(receiver.post(BODY, None)) == "missing_header"


def test_garbage_header(receiver):
    assert _reason(receiver.post(BODY, "not a jwt")) == "malformed_token"
    assert _reason(receiver.post(BODY, "a.b.c")) == "malformed_token"


def test_alg_none(receiver):
    token = jwt.encode(
        {"iss": "Upstash", "sub": receiver.url, "exp": time.time() + 300, "body": "x"},
        None,
        algorithm="none",
    )
    assert _reason(receiver.post(BODY, token)) in ("malformed_token", "unsupported_algorithm")
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    good = make_token(CURRENT, receiver.url, BODY).split(".")
    assert _reason(receiver.post(BODY, f"{header}.{good[1]}.{good[2]}")) == (
        "unsupported_algorithm"
    )


def test_hs512_token(receiver):
    assert _reason(receiver.signed(BODY, alg="HS512")) == "unsupported_algorithm"


def test_rs256_token(receiver):
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    token = jwt.encode(
        {"iss": "Upstash", "sub": receiver.url, "exp": now + 300, "iat": now, "body": "x"},
        key,
        algorithm="RS256",
    )
    assert _reason(receiver.post(BODY, token)) == "unsupported_algorithm"


def test_oversized_body(receiver):
    big = b'{"concept": "x", "pad": "' + b"a" * (receiver.settings.max_body_bytes + 10) + b'"}'
    resp = receiver.signed(big)
    assert resp.status_code == 413 and resp.json()["error"] == "body_too_large"


def test_non_json_body_is_permanent(receiver):
    resp = receiver.signed(b"concept=bitcoin")
    assert resp.status_code == 489
    assert resp.headers["Upstash-NonRetryable-Error"] == "true"
    assert "not valid JSON" in resp.json()["detail"]


def test_schema_invalid_body_is_permanent(receiver):
    resp = receiver.signed(b'{"concept": "x", "urls": ["ftp://nope"]}', message_id="msg_bad")
    assert resp.status_code == 489
    assert resp.headers["Upstash-NonRetryable-Error"] == "true"
    assert resp.json()["detail"].startswith("urls/0:")
    assert Inbox(receiver.settings.inbox_path).get("msg_bad") is None


def test_lone_surrogate_is_permanent_not_a_poisoned_batch(receiver):
    """A lone "\\ud800" escape is valid JSON but not text. It used to reach the inbox writer,
    fail the whole group commit (503 for every delivery in it) and be retried for ever."""
    bad = b'{"concept": "halving \\ud800 momentum"}'
    resp = receiver.signed(bad, message_id="msg_surrogate")
    assert resp.status_code == 489, resp.text
    assert resp.headers["Upstash-NonRetryable-Error"] == "true"
    assert "unpaired UTF-16 surrogate" in resp.json()["detail"]
    assert Inbox(receiver.settings.inbox_path).get("msg_surrogate") is None
    assert receiver.signed(BODY, message_id="msg_after_surrogate").status_code == 200


def test_rejections_never_echo_secrets(receiver):
    for resp in (
        receiver.signed(BODY, key="sig_WrongKey0123456789abcdefghijk"),
        receiver.signed(BODY, iss="x"),
    ):
        assert CURRENT not in resp.text and NEXT not in resp.text


FIXED_NOW = 1_795_000_000  # a fixed signing and checking instant for the claim-type table


@pytest.mark.parametrize(
    ("claims", "verdict"),
    [
        ({}, None),  # QStash's own shape: integer exp, nbf = 0, iat
        ({"exp": FIXED_NOW + 300.5, "iat": FIXED_NOW - 0.5}, None),  # floats are numbers too
        ({"nbf": None, "iat": None}, None),  # both optional
        ({"exp": None}, "missing_claim"),
        ({"exp": "9999999999"}, "invalid_claim"),
        ({"exp": True}, "invalid_claim"),  # JSON true is not a time, though Python's bool is an int
        ({"nbf": "0"}, "invalid_claim"),
        ({"iat": [1]}, "invalid_claim"),
        ({"exp": FIXED_NOW - 100}, "expired"),
    ],
    ids=[
        "ints",
        "floats",
        "no-nbf-iat",
        "no-exp",
        "exp-string",
        "exp-bool",
        "nbf-string",
        "iat-list",
        "expired",
    ],
)
def test_time_claims_must_be_numbers(claims, verdict):
    """The verifier's integer fast path decides exactly as the full claim checks."""
    from webhook_sensor.verify import SignatureVerifier, VerifyError

    url = "https://qpipe.example.com/api/qstash"
    # One fixed clock for signing and checking: parameters are built at collection, and a
    # wall-clock time taken then has expired by the time a long suite reaches this test.
    token = make_token(CURRENT, url, BODY, now=FIXED_NOW, **claims)
    verifier = SignatureVerifier(CURRENT, NEXT, url)
    if verdict is None:
        assert verifier.verify(token, BODY, now=FIXED_NOW)["iss"] == "Upstash"
    else:
        with pytest.raises(VerifyError) as err:
            verifier.verify(token, BODY, now=FIXED_NOW)
        assert err.value.reason == verdict


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: text.encode("utf-16"),  # json.loads(bytes) would sniff and accept it
        lambda text: b"\xef\xbb\xbf" + text.encode(),  # a UTF-8 byte-order mark
        lambda text: text.encode().replace(b"Upstash", b"Upst\xe4sh"),  # not UTF-8 at all
    ],
    ids=["utf-16", "utf-8-bom", "latin-1"],
)
def test_claims_must_be_utf8_json(encode):
    """RFC 7519: the claims are UTF-8 JSON. A correctly signed token whose claims are encoded
    any other way is malformed, not read by guessing its encoding."""
    import hashlib
    import hmac

    from webhook_sensor.verify import SignatureVerifier, VerifyError, body_hash

    url = "https://qpipe.example.com/api/qstash"
    claims = json.dumps(
        {"iss": "Upstash", "sub": url, "exp": FIXED_NOW + 300, "nbf": 0, "iat": FIXED_NOW,
         "body": body_hash(BODY)}
    )  # fmt: skip

    def seg(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    header = seg(b'{"alg":"HS256","typ":"JWT"}')
    signing_input = f"{header}.{seg(encode(claims))}"
    mac = hmac.new(CURRENT.encode(), signing_input.encode(), hashlib.sha256).digest()
    verifier = SignatureVerifier(CURRENT, NEXT, url)
    with pytest.raises(VerifyError) as err:
        verifier.verify(f"{signing_input}.{seg(mac)}", BODY, now=FIXED_NOW)
    assert err.value.reason == "malformed_token"
    # The same claims as UTF-8 pass: only the encoding was wrong.
    utf8_input = f"{header}.{seg(claims.encode())}"
    mac = hmac.new(CURRENT.encode(), utf8_input.encode(), hashlib.sha256).digest()
    assert verifier.verify(f"{utf8_input}.{seg(mac)}", BODY, now=FIXED_NOW)["iss"] == "Upstash"
