"""Cross-check with the official `qstash` SDK Receiver: same verdicts on the same tokens."""

from __future__ import annotations

import base64
import hashlib
import time

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qstash import Receiver
from qstash.errors import SignatureError

from qpipe_dagster_tests.webhook_sensor.conftest import CURRENT, NEXT, make_token
from webhook_sensor.verify import SignatureVerifier, VerifyError

URL = "https://qpipe.example.com/api/qstash"
BODY = b'{"concept": "cross check", "urls": ["https://example.com/x"]}'
SDK = Receiver(current_signing_key=CURRENT, next_signing_key=NEXT)
OURS = SignatureVerifier(CURRENT, NEXT, URL)


def sdk_accepts(token: str, body: bytes) -> bool:
    try:
        SDK.verify(signature=token, body=body.decode(), url=URL)
    except (SignatureError, jwt.PyJWTError):
        return False
    return True


def ours_accepts(token: str, body: bytes) -> bool:
    try:
        OURS.verify(token, body)
    except VerifyError:
        return False
    return True


def _none_token() -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    good = make_token(CURRENT, URL, BODY).split(".")
    return f"{header}.{good[1]}."


UNPADDED = base64.urlsafe_b64encode(hashlib.sha256(BODY).digest()).decode().rstrip("=")


def same_verdict_cases() -> dict[str, tuple[str, bytes]]:
    """Tokens signed now: built at collection time they would expire (QStash's exp is iat+300)
    before a long test session reached them, and the "valid" cases would silently turn invalid."""
    now = time.time()
    return {
        "valid current": (make_token(CURRENT, URL, BODY), BODY),
        "valid next": (make_token(NEXT, URL, BODY), BODY),
        "unpadded body claim": (make_token(CURRENT, URL, BODY, body=UNPADDED), BODY),
        "expired": (make_token(CURRENT, URL, BODY, iat=int(now - 500), exp=int(now - 200)), BODY),
        "nbf far ahead": (make_token(CURRENT, URL, BODY, nbf=int(now + 600)), BODY),
        "wrong sub": (make_token(CURRENT, "https://evil.example/api/qstash", BODY), BODY),
        "wrong iss": (make_token(CURRENT, URL, BODY, iss="NotUpstash"), BODY),
        "unknown key": (make_token("sig_Unknown0123456789abcdefghijklm", URL, BODY), BODY),
        "tampered body": (make_token(CURRENT, URL, BODY), BODY + b" "),
        "missing exp": (make_token(CURRENT, URL, BODY, exp=None), BODY),
        "hs512": (make_token(CURRENT + "x" * 40, URL, BODY, alg="HS512"), BODY),
        "alg none": (_none_token(), BODY),
        "garbage": ("garbage", BODY),
    }


@pytest.mark.parametrize("case", sorted(same_verdict_cases()))
def test_same_verdict_as_sdk(case):
    token, body = same_verdict_cases()[case]
    assert ours_accepts(token, body) == sdk_accepts(token, body)


def test_matrix_has_both_verdicts():
    verdicts = {sdk_accepts(t, b) for t, b in same_verdict_cases().values()}
    assert verdicts == {True, False}


def test_future_iat_within_tolerance_we_accept_where_sdk_does_not():
    """The documented improvement: QStash's clock a second ahead of ours is not a defect."""
    now = time.time()
    token = make_token(CURRENT, URL, BODY, iat=int(now + 2), exp=int(now + 302))
    assert ours_accepts(token, BODY)
    assert not sdk_accepts(token, BODY)


@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=300), use_next=st.booleans(), skew=st.integers(-250, 0))
def test_random_bodies_agree(text, use_next, skew):
    body = text.encode()
    now = int(time.time()) + skew
    token = make_token(NEXT if use_next else CURRENT, URL, body, iat=now, exp=now + 300)
    assert ours_accepts(token, body) and sdk_accepts(token, body)
    assert ours_accepts(token, body + b"!") == sdk_accepts(token, body + b"!") is False
