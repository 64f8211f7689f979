"""Hostile JWTs at the verifier and over HTTP: hostile time claims, header extensions and
nesting must get the official `qstash` SDK's verdict or a 401, never a 500 or an acceptance."""

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

from qpipe_dagster_tests.receiver.conftest import CURRENT, NEXT, start_receiver
from webhook_sensor.inbox import Inbox
from webhook_sensor.verify import SignatureVerifier, VerifyError, body_hash

URL = "https://qpipe.example.com/api/qstash"
BODY = b'{"concept": "Hostile Input"}'
SDK = Receiver(current_signing_key=CURRENT, next_signing_key=NEXT)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _signed(claims_json: str, url: str = URL, header: dict | None = None) -> str:
    """A token over exactly this claims text (json.dumps cannot write 1e400), signed by CURRENT."""
    h = _b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{h}.{_b64(claims_json.encode())}"
    mac = hmac.new(CURRENT.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _claims(url: str = URL, body: bytes = BODY, **over: object) -> str:
    now = int(time.time())
    claims: dict = {"iss": "Upstash", "sub": url, "exp": now + 300, "nbf": 0, "iat": now,
                    "body": body_hash(body)}  # fmt: skip
    claims.update(over)
    return json.dumps(claims)  # allow_nan: NaN and Infinity come out as those literals


def _ours(token: str) -> str | None:
    """None when accepted, else the reason; anything but VerifyError propagates (a 500)."""
    try:
        SignatureVerifier(CURRENT, NEXT, URL).verify(token, BODY)
    except VerifyError as exc:
        return exc.reason
    return None


def _sdk_accepts(token: str) -> bool:
    try:
        SDK.verify(signature=token, body=BODY.decode(), url=URL)
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
    resp = receiver.post(BODY, nan_exp, "msg_nan_exp")
    assert resp.status_code == 401 and resp.json() == {"error": "invalid_claim"}
    assert Inbox(receiver.settings.inbox_path).get("msg_nan_exp") is None
    huge_nbf = _signed(_claims(receiver.url, nbf=10**400), receiver.url)
    resp = receiver.post(BODY, huge_nbf)
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
        resp = rcv.post(BODY, token)
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
