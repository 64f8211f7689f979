"""Receiver configuration from the environment, validated once at start-up with clear errors.

The variables are parsed by `qpipe_dagster.settings` (SettingError names each one); this module
holds the receiver's defaults and the Settings object the app is built from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from qpipe_dagster.paths import qpipe_home, state_paths
from qpipe_dagster.settings import (
    DEFAULT_RECEIVER_URL,
    SettingError,
    crawl_private_addresses_allowed,
    env_path,
    env_value,
    inbox_url,
    receiver_clock_tolerance_s,
    receiver_max_body_bytes,
    receiver_rate_limit,
    receiver_url,
)

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


def default_inbox_path() -> Path:
    """The inbox shared by receiver and sensor: $DAGSTER_HOME/qpipe/inbox.sqlite unless
    QPIPE_INBOX_PATH overrides it (the folder is created when it is the default)."""
    if env_value("QPIPE_INBOX_PATH") is None:
        qpipe_home()
    return state_paths().inbox


def default_inbox_target() -> Path | str:
    """The inbox the sensor and operators use: QPIPE_INBOX_URL if set, else the SQLite file."""
    return inbox_url() or default_inbox_path()


def inbox_target_from_env(env: Mapping[str, str]) -> Path | str:
    """Like `default_inbox_target` for an explicit environment (doctor, backup, env checks)."""
    return inbox_url(env) or state_paths(env).inbox


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
        """Every receiver variable, each parsed by qpipe_dagster.settings (SettingError)."""
        current = env_value("QSTASH_CURRENT_SIGNING_KEY", env)
        nxt = env_value("QSTASH_NEXT_SIGNING_KEY", env)
        if nxt and not current:
            raise SettingError(
                "QSTASH_NEXT_SIGNING_KEY is set but QSTASH_CURRENT_SIGNING_KEY is not"
            )
        if not current and env_value("QPIPE_DEPLOY", env) == "prod":
            # the public dev keys would let anyone sign deliveries: never in production
            raise SettingError(PROD_NEEDS_SIGNING_KEYS)
        return cls(
            current_signing_key=current or DEV_CURRENT_SIGNING_KEY,
            next_signing_key=nxt if current else DEV_NEXT_SIGNING_KEY,
            receiver_url=receiver_url(env),
            inbox_path=env_path("QPIPE_INBOX_PATH", env),
            inbox_url=inbox_url(env),
            dagster_home=env_path("DAGSTER_HOME", env),
            clock_tolerance_s=receiver_clock_tolerance_s(env),
            max_body_bytes=receiver_max_body_bytes(env),
            rate_limit_per_s=receiver_rate_limit(env),
            using_dev_keys=not current,
            public_seeds_only=not crawl_private_addresses_allowed(env),
        )
