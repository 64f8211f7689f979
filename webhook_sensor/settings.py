"""Receiver configuration from the environment, validated once at start-up with clear errors."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from qpipe_dagster.paths import qpipe_home
from qpipe_dagster.qstash.checks import QStashInputError, http_url
from qpipe_dagster.settings import SettingError, crawl_private_addresses_allowed, whole_number
from webhook_sensor.inbox.postgres import redact

# Published keys of the QStash local dev server (`npx @upstash/qstash-cli dev`); used only when
# no keys are configured, so `qpipe submit` works locally with no account.
DEV_CURRENT_SIGNING_KEY = "sig_7RvLjqfZBvP5KEUimQCE1pvpLuou"
DEV_NEXT_SIGNING_KEY = "sig_7W3ZNbfKWk5NWwEs3U4ixuQ7fxwE"
# What a blank key means, said the same way by the start-up check and the receiver itself.
PROD_NEEDS_SIGNING_KEYS = (
    "QSTASH_CURRENT_SIGNING_KEY and QSTASH_NEXT_SIGNING_KEY are blank and QPIPE_DEPLOY=prod: "
    "the receiver refuses to start (the public dev keys, used only outside production, would "
    "let anyone sign deliveries). Copy both from the Upstash console (QStash > Signing Keys) "
    "into .env"
)
DEFAULT_RECEIVER_URL = "http://127.0.0.1:8766/api/qstash"


class SettingsError(ValueError):
    """An environment variable with a value the receiver cannot use; names the variable."""


def env_number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    """A numeric variable, `default` when unset; a bad or too-small value names the variable."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum:g}")
    return value


def env_finite(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    """`env_number`, also refusing 'nan' and 'inf' (or '1e400'), which float() accepts: a NaN
    clock tolerance let every expired token through and a NaN rate limit never limited."""
    value = env_number(env, name, default, minimum)
    if not math.isfinite(value):
        raise SettingsError(f"{name}={env.get(name)!r} must be a finite number")
    return value


MAX_BODY_LIMIT = 1 << 30  # 1 GiB: the body is held in memory while it is verified


def env_bytes(env: Mapping[str, str], name: str, default: int) -> int:
    """A byte count in ASCII digits: '2.5' was truncated, '1e400' or 'nan' escaped as bare
    OverflowError/ValueError from int()."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return whole_number(raw, 1, MAX_BODY_LIMIT)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is invalid: {exc} (bytes)") from None


def receiver_url(raw: str) -> str:
    """QPIPE_RECEIVER_URL by the rule `qpipe submit` applies to it (whitespace, no host, a bad
    port or IPv6 literal, non-ASCII); such a URL used to start a receiver that refused every
    delivery as wrong_subject."""
    try:
        return http_url("QPIPE_RECEIVER_URL", raw)
    except QStashInputError as exc:
        raise SettingsError(str(exc)) from None


def default_inbox_path() -> Path:
    """The inbox shared by receiver and sensor: $DAGSTER_HOME/qpipe/inbox.sqlite unless overridden."""
    override = os.environ.get("QPIPE_INBOX_PATH")
    return Path(override).resolve() if override else qpipe_home() / "inbox.sqlite"


def inbox_url_from_env(env: Mapping[str, str]) -> str | None:
    """QPIPE_INBOX_URL, validated: a postgresql:// URL, and not combined with QPIPE_INBOX_PATH."""
    url = env.get("QPIPE_INBOX_URL", "").strip()
    if not url:
        return None
    shown = redact(url)
    if not url.startswith(("postgresql://", "postgres://")):
        scheme = url.split("://")[0] if "://" in url else url[:12]
        raise SettingsError(
            f"QPIPE_INBOX_URL starts with {scheme!r}: it must be a postgresql:// URL"
            " (for a SQLite inbox set QPIPE_INBOX_PATH instead)"
        )
    if env.get("QPIPE_INBOX_PATH", "").strip():
        raise SettingsError(
            "QPIPE_INBOX_URL and QPIPE_INBOX_PATH are both set: choose PostgreSQL (the URL) or"
            " a SQLite file (the path), not both"
        )
    try:
        from psycopg2.extensions import parse_dsn
    except ImportError:
        raise SettingsError(
            f"QPIPE_INBOX_URL={shown!r} needs psycopg2: pip install 'qpipe[prod]'"
            " (or psycopg2-binary)"
        ) from None
    try:
        params = parse_dsn(url)
    except Exception as exc:  # psycopg2.ProgrammingError: libpq's own message
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SettingsError(f"QPIPE_INBOX_URL={shown!r} is not a valid URL: {detail}") from None
    ports = [x for x in params.get("port", "").split(",") if x]
    if not all(x.isascii() and x.isdigit() and 0 < int(x) < 65536 for x in ports):
        raise SettingsError(
            f"QPIPE_INBOX_URL={shown!r} is not a valid URL: port {params['port']!r} is not a"
            " number from 1 to 65535"
        )
    if not params.get("dbname"):
        raise SettingsError(f"QPIPE_INBOX_URL={shown!r} names no database (…/DBNAME)")
    return url


def default_inbox_target() -> Path | str:
    """The inbox the sensor and operators use: QPIPE_INBOX_URL if set, else the SQLite file."""
    return inbox_url_from_env(os.environ) or default_inbox_path()


def inbox_target_from_env(env: Mapping[str, str]) -> Path | str:
    """Like `default_inbox_target` for an explicit environment (doctor, backup, env checks)."""
    url = inbox_url_from_env(env)
    if url:
        return url
    path = env.get("QPIPE_INBOX_PATH", "").strip()
    if path:
        return Path(path).resolve()
    home = env.get("DAGSTER_HOME", "").strip() or ".dagster_home"
    return Path(home).resolve() / "qpipe" / "inbox.sqlite"


def _private_addresses_allowed(env: Mapping[str, str]) -> bool:
    try:  # the crawler's own rule, so both read the variable alike
        return crawl_private_addresses_allowed(env)
    except SettingError as exc:
        raise SettingsError(str(exc)) from None


@dataclass(frozen=True)
class Settings:
    current_signing_key: str = DEV_CURRENT_SIGNING_KEY
    next_signing_key: str | None = DEV_NEXT_SIGNING_KEY
    receiver_url: str = DEFAULT_RECEIVER_URL
    inbox_path: Path | None = None  # None: default_inbox_path(), resolved at start-up
    inbox_url: str | None = None  # postgresql://...: the PostgreSQL inbox, instead of the path
    dagster_home: Path | None = None  # None: DAGSTER_HOME (or ./.dagster_home)
    clock_tolerance_s: float = 30.0
    max_body_bytes: int = 1024 * 1024
    rate_limit_per_s: float = 500.0
    using_dev_keys: bool = True
    # QPIPE_CRAWL_PRIVATE_ADDRESSES=refuse: seed URLs on loopback/private IP literals get a 489
    # here rather than refused rows at crawl time (names are checked by the crawler's resolver).
    public_seeds_only: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        current = env.get("QSTASH_CURRENT_SIGNING_KEY", "").strip()
        nxt = env.get("QSTASH_NEXT_SIGNING_KEY", "").strip()
        if nxt and not current:
            raise SettingsError(
                "QSTASH_NEXT_SIGNING_KEY is set but QSTASH_CURRENT_SIGNING_KEY is not"
            )
        if not current and env.get("QPIPE_DEPLOY", "").strip() == "prod":
            # the public dev keys would let anyone sign deliveries: never in production
            raise SettingsError(PROD_NEEDS_SIGNING_KEYS)
        url = env.get("QPIPE_RECEIVER_URL", "").strip() or DEFAULT_RECEIVER_URL
        if not url.startswith(("http://", "https://")):
            raise SettingsError(f"QPIPE_RECEIVER_URL={url!r} must be an http(s) URL")
        url = receiver_url(url)
        inbox_url = inbox_url_from_env(env)
        inbox = env.get("QPIPE_INBOX_PATH", "").strip()
        home = env.get("DAGSTER_HOME", "").strip()
        return cls(
            current_signing_key=current or DEV_CURRENT_SIGNING_KEY,
            next_signing_key=(nxt or None) if current else DEV_NEXT_SIGNING_KEY,
            receiver_url=url,
            inbox_path=Path(inbox).resolve() if inbox else None,
            inbox_url=inbox_url,
            dagster_home=Path(home).resolve() if home else None,
            clock_tolerance_s=env_finite(env, "QPIPE_RECEIVER_CLOCK_TOLERANCE_S", 30.0, 0),
            max_body_bytes=env_bytes(env, "QPIPE_RECEIVER_MAX_BODY_BYTES", 1024 * 1024),
            rate_limit_per_s=env_finite(env, "QPIPE_RECEIVER_RATE_LIMIT", 500.0, 0.001),
            using_dev_keys=not current,
            public_seeds_only=not _private_addresses_allowed(env),
        )
