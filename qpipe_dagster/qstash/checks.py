"""Checks on what we send to QStash or the receiver, run before anything leaves the process.

QStash answers a bad cron, delay or callback with a 400 whose wording we do not control, and
httpx turns a header value it cannot send into a transport error that used to be retried as
"cannot reach QStash". Each check here names the field and says what would be accepted.
Pure: no Dagster, no network.
"""

from __future__ import annotations

import math
import re
import time
from email.utils import parsedate_to_datetime

from qpipe_dagster import settings


class QStashInputError(ValueError):
    """A value refused before sending; the message names the field and why."""


# RFC 9110 field-value as h11 sends it, restricted to ASCII (httpx encodes str values as ASCII):
# visible characters with single inner spaces, nothing leading or trailing.
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# URL group (topic) names: QStash allows letters, digits, '-', '_' and '.'.
_URL_GROUP = re.compile(r"[A-Za-z0-9_.\-]+")

_DELAY = re.compile(r"([0-9]+)([smhd]?)")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DELAY_S = 10 * 365 * 86400  # QStash's largest plan limit is 1 year; 10 years is a typo
MAX_UNIX_S = 10**11  # year ~5138: anything larger is a millisecond timestamp


def header_value(field: str, value: object, *, max_len: int | None = None) -> str:
    """`value` if it can travel in an HTTP header as is; else QStashInputError naming `field`."""
    if not isinstance(value, str):
        raise QStashInputError(f"{field} must be text, got {type(value).__name__}")
    if not value.strip():
        raise QStashInputError(f"{field} is empty")
    if max_len is not None and len(value) > max_len:
        raise QStashInputError(f"{field} is {len(value)} characters long; at most {max_len}")
    if not _HEADER_VALUE.fullmatch(value):
        bad = next((c for c in value if not " " <= c <= "~"), None)
        why = f"contains {bad!r}" if bad is not None else "starts or ends with a space"
        raise QStashInputError(
            f"{field} {value!r} {why}: it travels in an HTTP header, so only printable ASCII"
            " without leading or trailing spaces can be sent"
        )
    return value


def header_name(field: str, name: object) -> str:
    if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
        raise QStashInputError(f"{field}: {name!r} is not a valid HTTP header name")
    return name


def http_url(field: str, value: object) -> str:
    """An absolute http(s) URL with a host, as QStash and httpx need it (settings.http_url)."""
    if not isinstance(value, str) or not value.strip():
        raise QStashInputError(f"{field} is empty; expected an http:// or https:// URL")
    try:
        return settings.http_url(value)
    except ValueError as exc:
        raise QStashInputError(f"{field} {value!r} {exc}") from None


def destination(field: str, value: object) -> str:
    """A publish destination: an http(s) URL, or the name of a QStash URL group."""
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return http_url(field, value)
    if isinstance(value, str) and _URL_GROUP.fullmatch(value):
        return value
    raise QStashInputError(
        f"{field} {value!r} is neither an http(s) URL nor a URL group name"
        " (letters, digits, '-', '_', '.')"
    )


def delay_header(value: object, field: str = "delay") -> str:
    """QStash's Upstash-Delay value: whole seconds (int or '30'), or '<number><s|m|h|d>'."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise QStashInputError(
            f"{field} must be whole seconds or text like '30s', '10m', '2h', '7d';"
            f" got {type(value).__name__} {value!r}"
        )
    if isinstance(value, int):
        number, unit = value, "s"
    else:
        text = value.strip()
        m = _DELAY.fullmatch(text)
        if text.startswith("-") and _DELAY.fullmatch(text[1:]):
            raise QStashInputError(f"{field} {value!r} is negative")
        if m is None:
            raise QStashInputError(
                f"{field} {value!r} is not a delay: use a whole number and a unit, like '30s',"
                " '10m', '2h' or '7d'"
            )
        number, unit = int(m.group(1)), m.group(2) or "s"
    if number < 0:
        raise QStashInputError(f"{field} {value!r} is negative")
    if number * _UNIT_S[unit] > MAX_DELAY_S:
        raise QStashInputError(
            f"{field} {value!r} is more than 10 years (QStash allows at most 7 days on the free"
            " plan, 1 year on pay-as-you-go)"
        )
    return f"{number}{unit}"


def whole_number(field: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """An int argument in [minimum, maximum], by settings.whole_number (the environment's rule)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise QStashInputError(f"{field} must be a whole number, got {value!r}")
    try:
        return settings.whole_number(value, minimum, maximum)
    except ValueError:
        top = maximum if maximum is not None or value < minimum else settings.MAX_WHOLE
        upper = f" and at most {top}" if top is not None else ""
        raise QStashInputError(f"{field} must be at least {minimum}{upper}, got {value}") from None


def check_cron(expression: object, field: str = "cron") -> str:
    """A five-field cron expression (optionally 'CRON_TZ=<zone> ' first), as QStash takes it
    (settings.cron in the QStash dialect).

    Refused before sending with the field that is wrong, e.g. "hour field: 25 is out of range".
    """
    if not isinstance(expression, str) or not expression.strip():
        raise QStashInputError(f"{field} is empty; expected e.g. '0 6 * * *'")
    header_value(field, expression)
    try:
        return settings.cron(expression, dialect="qstash")
    except ValueError as exc:
        why = str(exc)
        sep = " " if why.startswith("has ") else ": "  # "'x' has 1 fields", "'x': hour field"
        raise QStashInputError(f"{field} {expression!r}{sep}{why}") from None


# --- Retry-After ---------------------------------------------------------------------------------
def retry_after_s(raw: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After-style value: delay seconds, an HTTP-date, or a unix
    timestamp (s or ms, as Upstash's rate-limit headers send). None when unusable (NaN, junk)."""
    if raw is None or not raw.strip():
        return None
    now = time.time() if now is None else now
    try:
        value = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            return None
        value = when.timestamp() - now
    else:
        if not math.isfinite(value):
            return None
        if value > 1e9:  # a unix timestamp (seconds or ms), not a delay
            value = (value / 1000 if value > 1e11 else value) - now
    return max(value, 0.0)
