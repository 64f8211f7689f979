"""Sign a delivery exactly as QStash does, so local mode exercises the real verification path."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time

import jwt

from webhook_sensor.settings import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY

__all__ = ["DEV_CURRENT_SIGNING_KEY", "DEV_NEXT_SIGNING_KEY", "sign_delivery"]

TOKEN_TTL_S = 300


def sign_delivery(
    signing_key: str, url: str, body: bytes, *, now: float | None = None, ttl_s: int = TOKEN_TTL_S
) -> str:
    """The `Upstash-Signature` JWT QStash would send for `body` delivered to `url`."""
    iat = int(time.time() if now is None else now)
    claims = {
        "iss": "Upstash",
        "sub": url,
        "exp": iat + ttl_s,
        "nbf": 0,
        "iat": iat,
        "jti": "jwt_" + secrets.token_hex(12),
        "body": base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode("ascii"),
    }
    return jwt.encode(claims, signing_key.encode("utf-8"), algorithm="HS256")
