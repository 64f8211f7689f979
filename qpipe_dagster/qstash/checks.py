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
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx


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
    """An absolute http(s) URL with a host, as QStash and httpx need it."""
    if not isinstance(value, str) or not value.strip():
        raise QStashInputError(f"{field} is empty; expected an http:// or https:// URL")
    if value != value.strip() or any(c.isspace() for c in value):
        raise QStashInputError(f"{field} {value!r} contains whitespace")
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, ValueError) as exc:
        raise QStashInputError(f"{field} {value!r} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise QStashInputError(f"{field} {value!r} must be an http:// or https:// URL with a host")
    if not value.isascii():
        raise QStashInputError(
            f"{field} {value!r} has non-ASCII characters; percent-encode them (or use the"
            " punycode host name)"
        )
    return value


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
    if isinstance(value, bool) or not isinstance(value, int):
        raise QStashInputError(f"{field} must be a whole number, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise QStashInputError(f"{field} must be at least {minimum}{upper}, got {value}")
    return value


# --- cron --------------------------------------------------------------------------------------
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_CRON_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {n: i for i, n in enumerate(_MONTHS, 1)}),
    ("day of week", 0, 7, {n: i for i, n in enumerate(_DAYS)}),
)
_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def _cron_value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    value = int(text) if text.isascii() and text.isdigit() else names.get(text.upper())
    if value is None:
        raise QStashInputError(f"{name} field: {text!r} is not a number")
    if not low <= value <= high:
        raise QStashInputError(f"{name} field: {value} is out of range {low}-{high}")
    return value


def _cron_field(part: str, name: str, low: int, high: int, names: dict[str, int]) -> None:
    for item in part.split(","):
        base, slash, step = item.partition("/")
        if slash and not (step.isascii() and step.isdigit() and int(step) >= 1):
            raise QStashInputError(f"{name} field: step {step!r} in {item!r} is not a number >= 1")
        if base == "*":
            continue
        start, dash, end = base.partition("-")
        if not start or (dash and not end):
            raise QStashInputError(f"{name} field: {item!r} is not a value, range or '*'")
        first = _cron_value(start, name, low, high, names)
        if dash and _cron_value(end, name, low, high, names) < first:
            raise QStashInputError(f"{name} field: range {base!r} runs backwards")


def check_cron(expression: object, field: str = "cron") -> str:
    """A five-field cron expression (optionally 'CRON_TZ=<zone> ' first), as QStash takes it.

    Refused before sending with the field that is wrong, e.g. "hour field: 25 is out of range".
    """
    if not isinstance(expression, str) or not expression.strip():
        raise QStashInputError(f"{field} is empty; expected e.g. '0 6 * * *'")
    header_value(field, expression)
    parts = expression.split()
    if parts[0].startswith("CRON_TZ="):
        zone = parts.pop(0).removeprefix("CRON_TZ=")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise QStashInputError(
                f"{field} {expression!r}: CRON_TZ={zone!r} is not an IANA time zone"
                " (e.g. America/New_York)"
            ) from None
    if len(parts) == 1 and parts[0].lower() in _CRON_MACROS:
        return expression
    if len(parts) != 5:
        raise QStashInputError(
            f"{field} {expression!r} has {len(parts)} fields; expected 5"
            " (minute hour day-of-month month day-of-week), e.g. '0 6 * * *'"
        )
    for part, (name, low, high, names) in zip(parts, _CRON_FIELDS, strict=True):
        try:
            _cron_field(part, name, low, high, names)
        except QStashInputError as exc:
            raise QStashInputError(f"{field} {expression!r}: {exc}") from None
    return expression


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
