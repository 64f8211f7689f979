"""Every environment variable qpipe reads, parsed in this one module.

One parser per kind of value (whole number, number/duration, cron in the Dagster or the QStash
dialect, URL, path, choice, device, market symbol), each raising ValueError with *why* a value
is refused ("must be a whole number from 1 to 65535"). The getters read a variable with
`env_value` (a blank value, empty or only whitespace, counts as unset) and turn that ValueError
into SettingError, the one error class for configuration, whose message names the variable, the
value and what would be accepted: "WEAVIATE_GRPC_PORT='abc' is invalid: must be a whole number
from 1 to 65535". `FORMATS` maps each optional variable to its parser; the start-up check
(`python -m qpipe_dagster.ops.env --role ROLE`) runs it on every set variable, so a value it
accepts is never refused later, and the other way round.

Other modules reuse the parsers for their own inputs and keep their own error class there: the
QStash client's arguments (`qpipe_dagster.qstash.checks`) call `whole_number`, `cron(...,
dialect="qstash")` and `http_url`; the encoder calls `device`; the concept model calls
`market_symbol`.

Why hand-written and not pydantic-settings: every message must name the variable, the value as
written and the fix, and the start-up check must test each variable on its own and list every
problem at once. pydantic-settings validates one model at a time and reports errors in its own
format ("Input should be a valid integer [type=int_parsing, ...]"), so each field would need a
custom validator and the errors rewrapped anyway; it also reads blank as a value (not unset)
and would add a dependency to the stage packages, which import no Dagster or pydantic model.
The parsers here are small and shared with the non-environment inputs above.

Only stdlib and httpx are imported: every first-party module may import this one, so it imports
none of them (a leaf, so no import cycle can run through it).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

T = TypeVar("T")


class SettingError(ValueError):
    """An environment variable holds a value qpipe cannot use; the message names it."""


# --- reading ---------------------------------------------------------------------------------


def env_value(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The variable's value without surrounding whitespace, or None when unset or blank."""
    raw = (os.environ if env is None else env).get(name)
    if raw is None or not raw.strip():
        return None
    return raw.strip()


def env_secret(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """A secret as written (a password may end in a space), or None when unset or blank."""
    raw = (os.environ if env is None else env).get(name)
    return None if raw is None or not raw.strip() else raw


def invalid(name: str, value: str, why: str) -> SettingError:
    """The one wording of a refused value: NAME='value' is invalid: why."""
    return SettingError(f"{name}={value!r} is invalid: {why}")


def env_parsed(
    name: str, parse: Callable[[str], T], env: Mapping[str, str] | None = None
) -> T | None:
    """`parse` applied to the variable, None when unset or blank; its ValueError names it."""
    value = env_value(name, env)
    if value is None:
        return None
    try:
        return parse(value)
    except ValueError as exc:
        raise invalid(name, value, str(exc)) from None


# --- whole numbers ---------------------------------------------------------------------------

_WHOLE = re.compile(r"[0-9]+")  # ASCII digits only: no sign, exponent, '_' or other scripts
MAX_WHOLE = 10**15 - 1  # the bound when none is given: 15 digits, far beyond any count here


def whole_number(value: str | int, lo: int, hi: int | None = None) -> int:
    """`value` (ASCII digits, or an int) as an int in [lo, hi]; ValueError saying what is
    expected otherwise. Without `hi` the message says ">= lo" (the bound is MAX_WHOLE)."""
    text = str(value).strip() if not isinstance(value, bool) else ""
    top = MAX_WHOLE if hi is None else hi
    # int() refuses over 4,300 digits with its own message; no bound here needs 40
    if not _WHOLE.fullmatch(text) or len(text.lstrip("0")) > 40 or not lo <= int(text) <= top:
        if hi is None:
            raise ValueError(f"must be a whole number >= {lo}")
        raise ValueError(f"must be a whole number from {lo} to {hi}")
    return int(text)


def env_int(name: str, lo: int, hi: int, env: Mapping[str, str] | None = None) -> int | None:
    """An integer variable in [lo, hi], None when unset or blank."""
    return env_parsed(name, lambda v: whole_number(v, lo, hi), env)


# --- numbers and durations -------------------------------------------------------------------

MAX_HOURS = 1_000_000.0  # about 114 years: longer windows are "never" and overflow timedelta


def number(value: str, lo: float, hi: float | None = None, unit: str | None = None) -> float:
    """`value` as a finite float in [lo, hi] ('nan', 'inf' and '1e400' are refused)."""
    try:
        result = float(value)
    except ValueError:
        result = math.nan
    top = math.inf if hi is None else hi
    if not (math.isfinite(result) and lo <= result <= top):  # also false for nan
        upper = "" if hi is None else f" and <= {hi:.0f}"
        raise ValueError(f"must be a finite number >= {lo:g}{upper}{f' ({unit})' if unit else ''}")
    return result


def hours(value: str, lo: float) -> float:
    """A duration in hours from `lo` to MAX_HOURS."""
    return number(value, lo, MAX_HOURS, "hours")


# --- cron --------------------------------------------------------------------------------------

CronDialect = Literal["dagster", "qstash"]
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# (Dagster dialect's name, QStash dialect's name, low, high, names QStash accepts)
_CRON_FIELDS: tuple[tuple[str, str, int, int, dict[str, int]], ...] = (
    ("minute", "minute", 0, 59, {}),
    ("hour", "hour", 0, 23, {}),
    ("day", "day of month", 1, 31, {}),
    ("month", "month", 1, 12, {n: i for i, n in enumerate(_MONTHS, 1)}),
    ("weekday", "day of week", 0, 7, {n: i for i, n in enumerate(_DAYS)}),
)
_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _cron_number(text: str, names: dict[str, int]) -> int | None:
    if _WHOLE.fullmatch(text):
        return int(text) if len(text.lstrip("0")) <= 3 else 10**3  # out of every range
    return names.get(text.upper())


def _cron_items(text: str) -> list[tuple[str, str | None, str | None]]:
    """(start or '*', end, step) for each comma-separated item of one field."""
    items = []
    for item in text.split(","):
        base, slash, step = item.partition("/")
        start, dash, end = base.partition("-")
        items.append((start, end if dash else None, step if slash else None))
    return items


def _cron_field(text: str, field: int, dialect: CronDialect) -> set[int]:
    """The values one field selects (N-M with N > M wraps around in the Dagster dialect, as
    croniter does); ValueError naming the field in the dialect's words."""
    dagster_name, qstash_name, lo, hi, names = _CRON_FIELDS[field]
    names = names if dialect == "qstash" else {}
    items = _cron_items(text)
    if dialect == "dagster":
        what = f"{dagster_name} field {text!r}"
        shape_ok = all(
            (
                (s == "*" and e is None)
                or (_WHOLE.fullmatch(s) and (e is None or _WHOLE.fullmatch(e)))
            )
            and (st is None or _WHOLE.fullmatch(st))
            for s, e, st in items
        )
        if not shape_ok:
            raise ValueError(f"{what} is not *, N, N-M, */S or a list of those")
    else:
        what = f"{qstash_name} field:"
    values: set[int] = set()
    for start, end, step in items:
        item = f"{start}{'' if end is None else '-' + end}{'' if step is None else '/' + step}"
        if step is not None and not (_WHOLE.fullmatch(step) and int(step) >= 1):
            if dialect == "dagster":
                raise ValueError(f"{what}: a step of 0 selects nothing")
            raise ValueError(f"{what} step {step!r} in {item!r} is not a number >= 1")
        if start == "*" and end is None:
            a, b = lo, hi
        else:
            if not start or end == "":
                raise ValueError(f"{what} {item!r} is not a value, range or '*'")
            bounds = []
            for part in (start, end) if end is not None else (start,):
                n = _cron_number(part, names)
                if n is None:
                    raise ValueError(f"{what} {part!r} is not a number")
                if not lo <= n <= hi:
                    if dialect == "dagster":
                        raise ValueError(f"{what}: {part} is outside {lo}-{hi}")
                    shown = n if n < 10**3 else part
                    raise ValueError(f"{what} {shown} is out of range {lo}-{hi}")
                bounds.append(n)
            a = bounds[0]
            b = bounds[-1] if end is not None else (hi if step else a)
            if a > b and dialect == "qstash":
                raise ValueError(f"{what} range {start + '-' + str(end)!r} runs backwards")
        every = int(step or 1)
        if a <= b:
            values.update(range(a, b + 1, every))
        else:
            values.update([*range(a, hi + 1), *range(lo, b + 1)][::every])
    return values


def cron(value: str, dialect: CronDialect = "dagster") -> str:
    """`value` if it is a cron string Dagster (or QStash) runs; ValueError saying why not.

    Both: five fields of *, N, N-M and /S steps, lists of those, values in range, steps >= 1.
    Dagster: also refuses a day that no selected month has (31 4 = April 31st: the schedule
    loads but never fires); N-M with N > M wraps around. QStash: also takes month and weekday
    names, @daily-style macros and a leading 'CRON_TZ=<zone> '; refuses backward ranges.
    """
    parts = value.split()
    if not parts:
        raise ValueError("is empty; expected e.g. '0 6 * * *'")
    if dialect == "qstash":
        if parts[0].startswith("CRON_TZ="):
            zone = parts.pop(0).removeprefix("CRON_TZ=")
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"CRON_TZ={zone!r} is not an IANA time zone (e.g. America/New_York)"
                ) from None
        if len(parts) == 1 and parts[0].lower() in _CRON_MACROS:
            return value
    if len(parts) != 5:
        raise ValueError(
            f"has {len(parts)} fields; expected 5 (minute hour day-of-month month day-of-week),"
            " e.g. '0 6 * * *'"
        )
    selected = [_cron_field(text, i, dialect) for i, text in enumerate(parts)]
    day, month, weekday = parts[2], parts[3], parts[4]
    if dialect == "dagster" and weekday == "*" and day != "*":  # both restricted: either fires
        days, months = selected[2], selected[3]
        if days and months and min(days) > max(_DAYS_IN_MONTH[m - 1] for m in months):
            raise ValueError(
                f"day field {day!r} never occurs in month field {month!r}: the schedule would "
                "never run"
            )
    return value


def env_cron(name: str, default: str, env: Mapping[str, str] | None = None) -> str:
    """A Dagster schedule's cron string from `name`, `default` when unset."""
    return env_parsed(name, cron, env) or default


# --- URLs, paths, choices ----------------------------------------------------------------------


def url(value: str, schemes: tuple[str, ...], *, host: bool = False) -> str:
    """`value` if its scheme is one of `schemes` (and it names a host, or at least a path)."""
    parts = urlsplit(value.strip())
    if parts.scheme not in schemes or not (parts.netloc or (parts.path and not host)):
        raise ValueError(f"must be a {'/'.join(schemes)} URL")
    return value.strip()


def http_url(value: str) -> str:
    """An absolute http(s) URL with a host, as QStash, httpx and the receiver need it."""
    if value != value.strip() or any(c.isspace() for c in value):
        raise ValueError("contains whitespace")
    try:
        parsed = httpx.URL(value)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("must be an http:// or https:// URL with a host")
    if not value.isascii():
        raise ValueError(
            "has non-ASCII characters; percent-encode them (or use the punycode host name)"
        )
    return value


def weaviate_url(value: str) -> str:
    """http:// or https://, a host, and a port (when given) from 1 to 65535."""
    example = "e.g. 'http://weaviate:8080'"
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(
            f"is not an http/https URL with a host: it must start with http:// or https://"
            f" ({example})"
        )
    if not parts.hostname or any(c.isspace() or ord(c) < 32 for c in value.strip()):
        raise ValueError(f"is not an http/https URL with a host ({example})")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port in (-1, 0):
        raise ValueError(
            "has an invalid port: an http/https URL's port is a number from 1 to 65535"
        )
    return value.strip()


S3_SCHEMES = ("s3", "r2")


def bucket_url(value: str) -> str:
    """s3://bucket/prefix or r2://bucket/prefix (keys and endpoint are checked on first use)."""
    parts = urlsplit(value)
    if parts.scheme not in S3_SCHEMES or not parts.netloc:
        raise ValueError(
            "must be s3://bucket/prefix or r2://bucket/prefix (a local folder: QPIPE_ASSET_DIR)"
        )
    return value


def backup_url(value: str) -> str:
    if urlsplit(value).scheme not in ("", "file", *S3_SCHEMES):
        raise ValueError("must be a path, file://, s3:// or r2:// URL")
    return value


def path(value: str, *, absolute: bool = False) -> Path:
    """`value` as a Path (refused when `absolute` and it is relative)."""
    if absolute and not os.path.isabs(value.strip()):
        raise ValueError("must be an absolute path")
    return Path(value.strip())


def env_path(name: str, env: Mapping[str, str] | None = None) -> Path | None:
    """A path variable resolved against the working directory, None when unset or blank."""
    found = env_parsed(name, path, env)
    return None if found is None else found.resolve()


def choice(value: str, options: tuple[str, ...], *, fold_case: bool = False) -> str:
    """`value` if it is one of `options`."""
    text = value.strip().lower() if fold_case else value.strip()
    if text not in options:
        if len(options) == 2 and fold_case:
            raise ValueError(f"must be {options[0]} or {options[1]}")
        raise ValueError(f"must be one of {', '.join(options)}")
    return text


def device(value: object) -> str:
    """An embedding device: auto, cpu, cuda or cuda:N (case and surrounding spaces ignored)."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if text not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:[0-9]+", text):
        raise ValueError("must be one of auto, cpu, cuda, cuda:N")
    return text


_SYMBOL = re.compile(r"^[A-Z0-9]{1,15}(?:[-/][A-Z0-9]{1,15})?$")


def market_symbol(value: str) -> str:
    """A market symbol upper-cased ('btc-usd' -> 'BTC-USD')."""
    symbol = value.strip().upper()
    if not _SYMBOL.match(symbol):
        raise ValueError(
            "must be a market symbol like BTC-USD or AAPL (letters and digits, one - or /)"
        )
    return symbol


def redact(text: str) -> str:
    """A URL without its password or query string (which may hold one), for logs and errors."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return "<not a URL>"
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    user = userinfo.split(":")[0] + "@" if at else ""
    return f"{scheme}://{user}{hostport}{slash}{tail.split('?')[0]}"


_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def _postgres(value: str, instead: str, need_dbname: bool = False) -> str:
    """A postgresql:// URL libpq parses; `instead` says how to choose the SQLite alternative."""
    if not value.startswith(_POSTGRES_SCHEMES):
        raise ValueError(f"it must be a postgresql:// URL ({instead})")
    try:  # psycopg2 is optional (qpipe[prod]): imported only when a URL is set
        from psycopg2.extensions import parse_dsn
    except ImportError:
        raise ValueError("needs psycopg2: pip install 'qpipe[prod]' (or psycopg2-binary)") from None
    try:
        params = parse_dsn(value)
    except Exception as exc:  # psycopg2.ProgrammingError: libpq's own message
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"is not a valid URL: {detail}") from None
    ports = [x for x in params.get("port", "").split(",") if x]
    if not all(_WHOLE.fullmatch(x) and 0 < int(x) < 65536 for x in ports):
        raise ValueError(
            f"is not a valid URL: port {params['port']!r} is not a number from 1 to 65535"
        )
    if need_dbname and not params.get("dbname"):
        raise ValueError("names no database (…/DBNAME)")
    return value


def postgres_url(
    name: str, env: Mapping[str, str] | None = None, *, instead: str, need_dbname: bool = False
) -> str | None:
    """A postgresql:// URL variable, None when unset. The URL may hold a password, so messages
    show it redacted ("NAME='postgresql://user@host/db' ...") or only its scheme."""
    value = env_value(name, env)
    if value is None:
        return None
    try:
        return _postgres(value, instead, need_dbname)
    except ValueError as exc:
        if not value.startswith(_POSTGRES_SCHEMES):
            scheme = value.split("://")[0] if "://" in value else value[:12]
            raise SettingError(f"{name} starts with {scheme!r}: {exc}") from None
        raise SettingError(f"{name}={redact(value)!r} {exc}") from None


# --- the variables ---------------------------------------------------------------------------


def embed_device(env: Mapping[str, str] | None = None) -> str:
    """QPIPE_EMBED_DEVICE normalised (auto, cpu, cuda, cuda:N); auto when unset."""
    return env_parsed("QPIPE_EMBED_DEVICE", device, env) or "auto"


def crawl_private_addresses_allowed(env: Mapping[str, str] | None = None) -> bool:
    """QPIPE_CRAWL_PRIVATE_ADDRESSES: allow (the default: `make run`'s demo site is on loopback)
    or refuse (production: crawls connect to public addresses only)."""
    return env_parsed("QPIPE_CRAWL_PRIVATE_ADDRESSES", _private_addresses, env) != "refuse"


def _private_addresses(value: str) -> str:
    return choice(value, ("allow", "refuse"), fold_case=True)


MAX_TRUNCATE_DIM = 65_536


def embed_truncate_dim(env: Mapping[str, str] | None = None) -> int | None:
    """QPIPE_EMBED_TRUNCATE_DIM (Matryoshka truncation), None when unset."""
    return env_int("QPIPE_EMBED_TRUNCATE_DIM", 1, MAX_TRUNCATE_DIM, env)


def model_download_allowed(env: Mapping[str, str] | None = None) -> bool:
    """QPIPE_ALLOW_MODEL_DOWNLOAD=1 lets the encoder fetch a model from the Hugging Face Hub."""
    return env_parsed("QPIPE_ALLOW_MODEL_DOWNLOAD", _zero_one, env) == "1"


def _zero_one(value: str) -> str:
    return choice(value, ("0", "1"))


def weaviate_grpc_port(env: Mapping[str, str] | None = None) -> int:
    """WEAVIATE_GRPC_PORT, 50051 when unset."""
    port = env_int("WEAVIATE_GRPC_PORT", 1, 65_535, env)
    return 50051 if port is None else port


def warm_workers_allowed(env: Mapping[str, str] | None = None) -> bool:
    """QPIPE_WARM_WORKERS: on (the default: local runs fork from the warm worker where the
    instance's launcher config asks for it) or off (every local run starts cold, as Dagster's
    default launcher starts it)."""
    return env_parsed("QPIPE_WARM_WORKERS", _on_off, env) != "off"


def _on_off(value: str) -> str:
    return choice(value, ("on", "off"), fold_case=True)


DEFAULT_SYMBOL = "BTC-USD"


def default_symbol(env: Mapping[str, str] | None = None) -> str:
    """QPIPE_DEFAULT_SYMBOL normalised ('btc-usd' -> 'BTC-USD'), BTC-USD when unset or blank."""
    return env_parsed("QPIPE_DEFAULT_SYMBOL", market_symbol, env) or DEFAULT_SYMBOL


def deploy_mode(env: Mapping[str, str] | None = None) -> str:
    """QPIPE_DEPLOY: local (the default) or prod (production variables become required)."""
    return env_parsed("QPIPE_DEPLOY", _deploy, env) or "local"


def _deploy(value: str) -> str:
    return choice(value, ("local", "prod"))


_CONCEPTS_INSTEAD = "unset it for the SQLite registry under $DAGSTER_HOME/qpipe"


def concepts_url(env: Mapping[str, str] | None = None) -> str | None:
    """QPIPE_CONCEPTS_URL: the PostgreSQL concept registry, None for the SQLite file."""
    return postgres_url("QPIPE_CONCEPTS_URL", env, instead=_CONCEPTS_INSTEAD)


def inbox_url(env: Mapping[str, str] | None = None) -> str | None:
    """QPIPE_INBOX_URL: the PostgreSQL inbox, not combined with QPIPE_INBOX_PATH."""
    found = postgres_url(
        "QPIPE_INBOX_URL", env, instead="for a SQLite inbox set QPIPE_INBOX_PATH instead",
        need_dbname=True,
    )  # fmt: skip
    if found and env_value("QPIPE_INBOX_PATH", env):
        raise SettingError(
            "QPIPE_INBOX_URL and QPIPE_INBOX_PATH are both set: choose PostgreSQL (the URL) or"
            " a SQLite file (the path), not both"
        )
    return found


# The receiver (webhook_sensor.settings.Settings is built from these).
DEFAULT_RECEIVER_URL = "http://127.0.0.1:8766/api/qstash"
MAX_BODY_LIMIT = 1 << 30  # 1 GiB: the body is held in memory while it is verified


def _rate(value: str) -> float:
    return number(value, 0.001)


def _tolerance(value: str) -> float:
    return number(value, 0)


def _body_bytes(value: str) -> int:
    return whole_number(value, 1, MAX_BODY_LIMIT)


def receiver_url(env: Mapping[str, str] | None = None) -> str:
    """QPIPE_RECEIVER_URL (signatures are bound to it), the local receiver when unset."""
    return env_parsed("QPIPE_RECEIVER_URL", http_url, env) or DEFAULT_RECEIVER_URL


def receiver_rate_limit(env: Mapping[str, str] | None = None) -> float:
    """QPIPE_RECEIVER_RATE_LIMIT: requests per second, 500 when unset."""
    found = env_parsed("QPIPE_RECEIVER_RATE_LIMIT", _rate, env)
    return 500.0 if found is None else found


def receiver_clock_tolerance_s(env: Mapping[str, str] | None = None) -> float:
    """QPIPE_RECEIVER_CLOCK_TOLERANCE_S: token clock skew allowed, 30 s when unset."""
    found = env_parsed("QPIPE_RECEIVER_CLOCK_TOLERANCE_S", _tolerance, env)
    return 30.0 if found is None else found


def receiver_max_body_bytes(env: Mapping[str, str] | None = None) -> int:
    """QPIPE_RECEIVER_MAX_BODY_BYTES, 1 MiB when unset."""
    found = env_parsed("QPIPE_RECEIVER_MAX_BODY_BYTES", _body_bytes, env)
    return 1024 * 1024 if found is None else found


# Backups and the Dagster instance (`qpipe_dagster.ops.targets`, `ops.backup`, `ops.host_state`).

WEAVIATE_BACKUP_BACKENDS = ("filesystem", "s3", "gcs", "azure")


def _weaviate_backend(value: str) -> str:
    return choice(value, WEAVIATE_BACKUP_BACKENDS)


def weaviate_backup_backend(env: Mapping[str, str] | None = None) -> str:
    """WEAVIATE_BACKUP_BACKEND: Weaviate's backup module, filesystem when unset."""
    return env_parsed("WEAVIATE_BACKUP_BACKEND", _weaviate_backend, env) or "filesystem"


def r2_prefix(env: Mapping[str, str] | None = None) -> str:
    """R2_PREFIX: the folder in the R2 backup bucket, 'qpipe' when unset. Set but blank means the
    bucket's top level (the one variable where blank is not unset: it has always meant that)."""
    raw = (os.environ if env is None else env).get("R2_PREFIX")
    return "qpipe" if raw is None else raw.strip()


@dataclass(frozen=True)
class DagsterPostgres:
    """The PostgreSQL Dagster instance (DAGSTER_PG_*), as libpq needs it."""

    host: str
    port: int
    user: str
    password: str  # as written: a password may begin or end with a space
    dbname: str


def dagster_postgres(env: Mapping[str, str] | None = None) -> DagsterPostgres | None:
    """DAGSTER_PG_*, None when DAGSTER_PG_HOST is unset (the instance is SQLite files)."""
    host = env_value("DAGSTER_PG_HOST", env)
    if host is None:
        return None
    port = env_int("DAGSTER_PG_PORT", 1, 65_535, env)
    return DagsterPostgres(
        host=host,
        port=5432 if port is None else port,
        user=env_value("DAGSTER_PG_USER", env) or "",
        password=env_secret("DAGSTER_PG_PASSWORD", env) or "",
        dbname=env_value("DAGSTER_PG_DB", env) or "",
    )


MIN_BACKUP_RETENTION_DAYS = 1


def backup_retention_days(env: Mapping[str, str] | None = None) -> int | None:
    """QPIPE_BACKUP_RETENTION_DAYS (a whole number >= 1), None when unset."""
    return env_parsed("QPIPE_BACKUP_RETENTION_DAYS", _retention_days, env)


def _retention_days(value: str) -> int:
    return whole_number(value, MIN_BACKUP_RETENTION_DAYS)


# Schedules and caps. Their messages keep the "NAME='value' must be ..." wording that the
# schedule tests pin; the start-up check words the same refusal "is invalid: ...".


def _short(name: str, value: str, why: str) -> SettingError:
    return SettingError(f"{name}={value!r} {why}")


def schedule_whole(name: str, default: int, lo: int, env: Mapping[str, str] | None = None) -> int:
    """A whole-number schedule setting ('2.5' and '1e1' refused, as the start-up check does)."""
    value = env_value(name, env)
    if value is None:
        return default
    try:
        return whole_number(value, lo)
    except ValueError:
        try:
            below = float(value) < lo
        except ValueError:
            raise _short(name, value, "is not a number") from None
        raise _short(
            name, value, f"must be at least {lo}" if below else "must be a whole number"
        ) from None


def schedule_hours(
    name: str, default: float, lo: float, env: Mapping[str, str] | None = None
) -> float:
    """Hours as a finite window: 'inf' or '1e400' used to crash the load with OverflowError."""
    value = env_value(name, env)
    if value is None:
        return default
    try:
        return hours(value, lo)
    except ValueError as exc:
        try:
            float(value)
        except ValueError:
            raise _short(name, value, "is not a number") from None
        raise invalid(name, value, str(exc)) from None


def cap(name: str, lo: int, env: Mapping[str, str] | None = None) -> int | None:
    """A daily cap (MAX_CONCEPTS_PER_DAY, QSTASH_DAILY_LIMIT), None when unset."""
    value = env_value(name, env)
    if value is None:
        return None
    try:
        return whole_number(value, lo)
    except ValueError as exc:
        raise _short(name, value, str(exc)) from None


# Each optional variable's parser: the start-up check runs it on every set variable.
PARSERS: dict[str, Callable[[str], object]] = {
    "DAGSTER_HOME": lambda v: path(v, absolute=True),
    "QPIPE_DEPLOY": _deploy,
    "MAX_CONCEPTS_PER_DAY": lambda v: whole_number(v, 0),
    "QSTASH_DAILY_LIMIT": lambda v: whole_number(v, 1),
    "QPIPE_RECRAWL_CRON": cron,
    "QPIPE_BACKUP_CRON": cron,
    "QPIPE_REPORT_CRON": cron,
    "QPIPE_HOUSEKEEPING_CRON": cron,
    "QPIPE_RECRAWL_MAX_AGE_HOURS": lambda v: hours(v, 0.01),
    "QPIPE_RECRAWL_MAX_PER_TICK": lambda v: whole_number(v, 1),
    "QPIPE_BACKUP_RETENTION_DAYS": _retention_days,
    "QPIPE_EMBED_DEVICE": device,
    "QPIPE_EMBED_TRUNCATE_DIM": lambda v: whole_number(v, 1, MAX_TRUNCATE_DIM),
    "QPIPE_ALLOW_MODEL_DOWNLOAD": _zero_one,
    "QPIPE_BACKEND": lambda v: choice(v, ("auto", "cpu", "gpu")),
    "QPIPE_DEFAULT_SYMBOL": market_symbol,
    "QPIPE_CRAWL_PRIVATE_ADDRESSES": _private_addresses,
    "QPIPE_WARM_WORKERS": _on_off,
    "WEAVIATE_URL": weaviate_url,
    "WEAVIATE_GRPC_PORT": lambda v: whole_number(v, 1, 65_535),
    "WEAVIATE_BACKUP_BACKEND": _weaviate_backend,
    "BACKUP_URL": backup_url,
    "BACKUP_S3_ENDPOINT": lambda v: url(v, ("http", "https")),
    "QPIPE_ASSET_URL": bucket_url,
    "QPIPE_ASSET_S3_ENDPOINT": lambda v: url(v, ("http", "https")),
    "QPIPE_RECEIVER_URL": http_url,
    "DAGSTER_PG_PORT": lambda v: whole_number(v, 1, 65_535),
    "QPIPE_CONCEPTS_URL": lambda v: _postgres(v, _CONCEPTS_INSTEAD),
    "QPIPE_RECEIVER_RATE_LIMIT": _rate,
    "QPIPE_RECEIVER_CLOCK_TOLERANCE_S": _tolerance,
    "QPIPE_RECEIVER_MAX_BODY_BYTES": _body_bytes,
}


def _problem(parse: Callable[[str], object]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        try:
            parse(value)
        except ValueError as exc:
            return str(exc)
        return None

    return check


# Why each set variable's value is refused, or None: what the start-up check reports.
FORMATS: dict[str, Callable[[str], str | None]] = {n: _problem(p) for n, p in PARSERS.items()}


def cron_problem(value: str) -> str | None:
    """Why `value` is not a cron string Dagster runs, or None."""
    return _problem(cron)(value)
