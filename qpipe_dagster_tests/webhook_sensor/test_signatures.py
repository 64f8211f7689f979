"""The signature matrix: every case is a real HTTP request to the running receiver."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time

import jwt
import pytest
from qstash import Receiver
from qstash.errors import SignatureError

from qpipe_dagster_tests.webhook_sensor.conftest import CURRENT, NEXT, make_token, start_receiver
from webhook_sensor.inbox import Inbox
from webhook_sensor.verify import SignatureVerifier, VerifyError, body_hash

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


# --- hostile tokens ----------------------------------------------------------------------------
# Hostile JWTs at the verifier and over HTTP: hostile time claims, header extensions and
# nesting must get the official `qstash` SDK's verdict or a 401, never a 500 or an acceptance.
URL = "https://qpipe.example.com/api/qstash"
HOSTILE_BODY = b'{"concept": "Hostile Input"}'
SDK = Receiver(current_signing_key=CURRENT, next_signing_key=NEXT)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _signed(claims_json: str, url: str = URL, header: dict | None = None) -> str:
    """A token over exactly this claims text (json.dumps cannot write 1e400), signed by CURRENT."""
    h = _b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{h}.{_b64(claims_json.encode())}"
    mac = hmac.new(CURRENT.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _claims(url: str = URL, body: bytes = HOSTILE_BODY, **over: object) -> str:
    now = int(time.time())
    claims: dict = {"iss": "Upstash", "sub": url, "exp": now + 300, "nbf": 0, "iat": now,
                    "body": body_hash(body)}  # fmt: skip
    claims.update(over)
    return json.dumps(claims)  # allow_nan: NaN and Infinity come out as those literals


def _ours(token: str) -> str | None:
    """None when accepted, else the reason; anything but VerifyError propagates (a 500)."""
    try:
        SignatureVerifier(CURRENT, NEXT, URL).verify(token, HOSTILE_BODY)
    except VerifyError as exc:
        return exc.reason
    return None


def _sdk_accepts(token: str) -> bool:
    try:
        SDK.verify(signature=token, body=HOSTILE_BODY.decode(), url=URL)
    except (SignatureError, jwt.PyJWTError):
        return False
    return True


# --- time claims and header extensions: same verdict as the SDK, never an exception ---------

HOSTILE_TOKENS = {
    # NaN compared false with everything: a token with exp=NaN never expired.
    "exp NaN": (lambda: _signed(_claims(exp=math.nan)), "invalid_claim"),
    "exp Infinity": (lambda: _signed(_claims(exp=math.inf)), "invalid_claim"),
    "exp 1e400": (lambda: _signed(_claims(exp="X").replace('"X"', "1e400")), "invalid_claim"),
    "nbf NaN": (lambda: _signed(_claims(nbf=math.nan)), "invalid_claim"),
    "iat -Infinity": (lambda: _signed(_claims(iat=-math.inf)), "invalid_claim"),
    # 400-digit integers overflowed `exp + tolerance` (OverflowError: a 500, retried).
    "exp 10**400": (lambda: _signed(_claims(exp=10**400)), None),
    "exp -10**400": (lambda: _signed(_claims(exp=-(10**400))), "expired"),
    "nbf 10**400": (lambda: _signed(_claims(nbf=10**400)), "not_yet_valid"),
    "iat 10**400": (lambda: _signed(_claims(iat=10**400)), "issued_in_future"),
    # RFC 7515 4.1.11: a "crit" extension the recipient does not understand must be refused.
    "crit": (lambda: _signed(_claims(), header={"alg": "HS256", "crit": ["exp"]}), "unsupported_header"),
    "b64 false": (
        lambda: _signed(_claims(), header={"alg": "HS256", "b64": False, "crit": ["b64"]}),
        "unsupported_header",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE_TOKENS))
def test_hostile_time_claims_and_headers_get_the_sdks_verdict(case):
    make, reason = HOSTILE_TOKENS[case]
    token = make()
    assert _ours(token) == reason
    assert (reason is None) == _sdk_accepts(token)


def test_nan_exp_over_http_is_401_and_a_huge_exp_is_not_a_500(receiver):
    nan_exp = _signed(_claims(receiver.url, exp=math.nan), receiver.url)
    resp = receiver.post(HOSTILE_BODY, nan_exp, "msg_nan_exp")
    assert resp.status_code == 401 and resp.json() == {"error": "invalid_claim"}
    assert Inbox(receiver.settings.inbox_path).get("msg_nan_exp") is None
    huge_nbf = _signed(_claims(receiver.url, nbf=10**400), receiver.url)
    resp = receiver.post(HOSTILE_BODY, huge_nbf)
    assert resp.status_code == 401 and resp.json() == {"error": "not_yet_valid"}


@pytest.mark.parametrize("segment", ["claims", "header"])
def test_deeply_nested_token_segment_is_401_not_a_500(tmp_path, segment):
    """Parsed before the signature is checked, so anyone could send it: it was a 500 with a
    traceback in the log and an `error` outcome for every such request."""
    server, rcv = start_receiver(tmp_path)
    good = _signed(_claims(rcv.url), rcv.url).split(".")
    deep = _b64(b"[" * 3000)
    token = f"{good[0]}.{deep}.{good[2]}" if segment == "claims" else f"{deep}.{good[1]}.{good[2]}"
    with server:
        resp = rcv.post(HOSTILE_BODY, token)
        assert resp.status_code == 401 and resp.json() == {"error": "malformed_token"}
        metrics = rcv.client.get(rcv.base + "/metrics").text
    assert 'outcome="error"' not in metrics
    rcv.client.close()


def test_verifier_refuses_a_non_finite_clock_tolerance():
    """NaN compares false: `now > exp + NaN` never held, so nothing would ever expire."""
    with pytest.raises(ValueError, match="finite"):
        SignatureVerifier(CURRENT, NEXT, URL, clock_tolerance_s=math.nan)
    with pytest.raises(ValueError, match="finite"):
        SignatureVerifier(CURRENT, NEXT, URL, clock_tolerance_s=math.inf)
