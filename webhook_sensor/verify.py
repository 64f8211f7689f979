"""Exact verification of QStash's `Upstash-Signature` JWT, with no web framework involved.

QStash signs each delivery with HS256, keyed by the raw UTF-8 bytes of the signing key, and puts
the destination URL in `sub` and base64url(SHA-256(body)) in `body`. We check the token by hand
(strict base64url, HS256 only, constant-time compare) because it is both stricter and faster than
a general JWT library, and because the clock tolerance must really apply to exp, nbf and iat.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Literal, overload

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_URLSAFE_TO_STD = bytes.maketrans(b"-_", b"+/")
_STD_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
ISSUER = "Upstash"
DEFAULT_CLOCK_TOLERANCE_S = 30.0
_MAX_CACHED_HEADERS = 16


class VerifyError(Exception):
    """A delivery whose signature cannot be trusted; `reason` is a short code safe to return."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _b64url_decode(part: str) -> bytes:
    """Decode one segment that `_TOKEN_RE` already limited to the base64url alphabet.

    binascii directly (what `base64.urlsafe_b64decode` ends in, minus its Python layers); a
    length that no base64 string can have (4n+1) raises binascii.Error as before.
    """
    padded = (part + "=" * (-len(part) % 4)).encode("ascii")
    return binascii.a2b_base64(padded.translate(_URLSAFE_TO_STD))


def _body_hash_bytes(body: bytes) -> bytes:
    digest = hashlib.sha256(body).digest()
    return binascii.b2a_base64(digest, newline=False).translate(_STD_TO_URLSAFE).rstrip(b"=")


def body_hash(body: bytes) -> str:
    """base64url(SHA-256(body)) without padding, the form compared against the `body` claim."""
    return _body_hash_bytes(body).decode("ascii")


def normalize_url(url: str) -> str:
    """Destination URLs compare equal with or without a trailing slash."""
    return url.rstrip("/")


@overload
def _number_claim(claims: dict, name: str, required: Literal[True]) -> float: ...


@overload
def _number_claim(claims: dict, name: str, required: bool) -> float | None: ...


def _number_claim(claims: dict, name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise VerifyError("missing_claim", name)
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise VerifyError("invalid_claim", f"{name} is not a number")
    if isinstance(value, float) and not math.isfinite(value):  # NaN, Infinity, 1e400
        raise VerifyError("invalid_claim", f"{name} is not a finite number")
    return value  # an int stays an int: float() of a 400-digit one overflows


def _seconds(a: float, b: float) -> str:
    """`a - b` for a rejection's detail; a time claim may be an int too large for a float."""
    try:
        return f"{a - b:.0f}s"
    except OverflowError:
        return "far"


@dataclass(frozen=True)
class SignatureVerifier:
    """Verifies deliveries for one public URL against the current and next signing keys."""

    current_key: str
    next_key: str | None
    url: str
    clock_tolerance_s: float = DEFAULT_CLOCK_TOLERANCE_S
    # Derived in __post_init__ (the instance is frozen, so set with object.__setattr__).
    _keys: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    _macs: tuple[hmac.HMAC, ...] = field(init=False, repr=False, compare=False)
    _url: str = field(init=False, repr=False, compare=False)
    _good_headers: dict[str, bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.current_key:
            raise ValueError("QSTASH_CURRENT_SIGNING_KEY is empty")
        if not self.url:
            raise ValueError("the receiver's public URL (QPIPE_RECEIVER_URL) is empty")
        if not 0 <= self.clock_tolerance_s < math.inf:  # NaN would let every token through
            raise ValueError(
                f"clock tolerance must be a finite number >= 0 seconds, got {self.clock_tolerance_s}"
            )
        keys = [self.current_key.encode("utf-8")]
        if self.next_key and self.next_key != self.current_key:
            keys.append(self.next_key.encode("utf-8"))
        object.__setattr__(self, "_keys", tuple(keys))
        # Keyed HMAC states, copied per check: saves re-deriving the padded key every time.
        macs = tuple(hmac.new(key, digestmod=hashlib.sha256) for key in keys)
        object.__setattr__(self, "_macs", macs)
        object.__setattr__(self, "_url", normalize_url(self.url))
        # Header segments of correctly signed tokens, known to say HS256 (QStash sends one). A
        # cached segment is still covered by each token's signature; we only skip its JSON.
        object.__setattr__(self, "_good_headers", {})

    def verify(self, signature: str | None, body: bytes, now: float | None = None) -> dict:
        """Return the token's claims, or raise VerifyError naming the first defect found."""
        if not signature:
            raise VerifyError("missing_header", "Upstash-Signature header is missing")
        token = signature.strip()
        if len(token) > 8192 or not _TOKEN_RE.match(token):
            raise VerifyError("malformed_token", "not a compact JWS")
        header_b64, payload_b64, sig_b64 = token.split(".")
        good_headers = self._good_headers
        known_header = header_b64 in good_headers
        try:
            # UTF-8 text, as RFC 7519 requires: json.loads on bytes would also take UTF-16/32
            # and a BOM, and sniffing for them costs more than parsing the claims.
            header = None if known_header else json.loads(_b64url_decode(header_b64).decode())
            claims = json.loads(_b64url_decode(payload_b64).decode())
            sig = _b64url_decode(sig_b64)
        except (ValueError, binascii.Error) as exc:
            raise VerifyError("malformed_token", "undecodable segment") from exc
        except RecursionError as exc:  # e.g. "[[[[…" claims: unsigned input, so not a 500
            raise VerifyError("malformed_token", "segment nested too deeply") from exc
        if not known_header:
            if not isinstance(header, dict):
                raise VerifyError("malformed_token", "header or claims are not JSON objects")
            if header.get("alg") != "HS256":
                raise VerifyError("unsupported_algorithm", f"alg={str(header.get('alg'))[:16]!r}")
            # RFC 7515 4.1.11: extensions listed in "crit" must be understood, and we know none
            # ("b64": false, RFC 7797, would change what was signed). PyJWT refuses them too.
            if "crit" in header or header.get("b64", True) is not True:
                raise VerifyError("unsupported_header", "crit/b64 header extensions")
        if not isinstance(claims, dict):
            raise VerifyError("malformed_token", "header or claims are not JSON objects")
        signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
        for base in self._macs:
            mac = base.copy()
            mac.update(signing_input)
            if hmac.compare_digest(mac.digest(), sig):
                break
        else:
            raise VerifyError("bad_signature", "no signing key matches")
        if not known_header and len(good_headers) < _MAX_CACHED_HEADERS:
            good_headers[header_b64] = True  # only headers a signing key vouched for
        self._check_claims(claims, body, time.time() if now is None else now)
        return claims

    def _check_claims(self, claims: dict, body: bytes, now: float) -> None:
        tol = self.clock_tolerance_s
        if claims.get("iss") != ISSUER:
            raise VerifyError("wrong_issuer", "iss is not Upstash")
        exp = claims.get("exp")
        nbf = claims.get("nbf")
        iat = claims.get("iat")
        # QStash sends three integers; anything else takes the checking path (bool is an int).
        if type(exp) is not int or type(nbf) is not int or type(iat) is not int:
            exp = _number_claim(claims, "exp", required=True)
            nbf = _number_claim(claims, "nbf", required=False)
            iat = _number_claim(claims, "iat", required=False)
        # Compared as `now ± tol` against the claim: exact for ints of any size (`exp + tol`
        # overflowed on a 400-digit exp and answered 500).
        if now - tol > exp:
            raise VerifyError("expired", f"expired {_seconds(now, exp)} ago")
        if nbf is not None and now + tol < nbf:
            raise VerifyError("not_yet_valid", f"nbf is {_seconds(nbf, now)} ahead")
        if iat is not None and now + tol < iat:
            raise VerifyError("issued_in_future", f"iat is {_seconds(iat, now)} ahead")
        sub = claims.get("sub")
        if not isinstance(sub, str) or normalize_url(sub) != self._url:
            raise VerifyError("wrong_subject", "sub does not match the receiver URL")
        claimed = claims.get("body")
        if not isinstance(claimed, str):
            raise VerifyError("missing_claim", "body")
        if not hmac.compare_digest(claimed.rstrip("=").encode(), _body_hash_bytes(body)):
            raise VerifyError("body_hash_mismatch", "body does not match its signed hash")
