"""Environment variables read at run time, parsed in one place.

Every reader treats a blank value (empty or only whitespace) as unset, the way the start-up check
`python -m qpipe_dagster.ops.env` does, and a value it cannot use raises SettingError naming the
variable, the value and what is expected. The start-up check calls the same parsers, so a value
it accepts is never refused later (and the other way round).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from qpipe_dagster.concepts import ConceptError, normalize_symbol
from qpipe_dagster.embed.encoder import EmbeddingError, normalize_device

_WHOLE = re.compile(r"[0-9]+")  # ASCII digits only: no sign, exponent, '_' or other scripts


class SettingError(ValueError):
    """An environment variable holds a value qpipe cannot use; the message names it."""


def env_value(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The variable's value without surrounding whitespace, or None when unset or blank."""
    raw = (os.environ if env is None else env).get(name)
    if raw is None or not raw.strip():
        return None
    return raw.strip()


def whole_number(value: str, lo: int, hi: int) -> int:
    """`value` as an int in [lo, hi]; ValueError saying what is expected otherwise."""
    text = value.strip()
    # int() refuses over 4,300 digits with its own message; no bound here needs 40
    if not _WHOLE.fullmatch(text) or len(text.lstrip("0")) > 40 or not lo <= int(text) <= hi:
        raise ValueError(f"must be a whole number from {lo} to {hi}")
    return int(text)


def env_int(name: str, lo: int, hi: int, env: Mapping[str, str] | None = None) -> int | None:
    """An integer variable in [lo, hi], None when unset or blank."""
    value = env_value(name, env)
    if value is None:
        return None
    try:
        return whole_number(value, lo, hi)
    except ValueError as exc:
        raise SettingError(f"{name}={value!r} is invalid: {exc}") from None


def embed_device(env: Mapping[str, str] | None = None) -> str:
    """QPIPE_EMBED_DEVICE normalised (auto, cpu, cuda, cuda:N); auto when unset."""
    value = env_value("QPIPE_EMBED_DEVICE", env)
    if value is None:
        return "auto"
    try:
        return normalize_device(value)
    except EmbeddingError:
        raise SettingError(
            f"QPIPE_EMBED_DEVICE={value!r} is invalid: must be one of auto, cpu, cuda, cuda:N"
        ) from None


def crawl_private_addresses_allowed(env: Mapping[str, str] | None = None) -> bool:
    """QPIPE_CRAWL_PRIVATE_ADDRESSES: allow (the default: `make run`'s demo site is on loopback)
    or refuse (production: crawls connect to public addresses only)."""
    value = env_value("QPIPE_CRAWL_PRIVATE_ADDRESSES", env)
    if value is None or value.lower() == "allow":
        return True
    if value.lower() == "refuse":
        return False
    raise SettingError(
        f"QPIPE_CRAWL_PRIVATE_ADDRESSES={value!r} is invalid: must be allow or refuse"
    )


MAX_TRUNCATE_DIM = 65_536


def embed_truncate_dim(env: Mapping[str, str] | None = None) -> int | None:
    """QPIPE_EMBED_TRUNCATE_DIM (Matryoshka truncation), None when unset."""
    return env_int("QPIPE_EMBED_TRUNCATE_DIM", 1, MAX_TRUNCATE_DIM, env)


def weaviate_grpc_port(env: Mapping[str, str] | None = None) -> int:
    """WEAVIATE_GRPC_PORT, 50051 when unset."""
    port = env_int("WEAVIATE_GRPC_PORT", 1, 65_535, env)
    return 50051 if port is None else port


DEFAULT_SYMBOL = "BTC-USD"


def default_symbol(env: Mapping[str, str] | None = None) -> str:
    """QPIPE_DEFAULT_SYMBOL normalised ('btc-usd' -> 'BTC-USD'), BTC-USD when unset or blank."""
    value = env_value("QPIPE_DEFAULT_SYMBOL", env)
    if value is None:
        return DEFAULT_SYMBOL
    try:
        return normalize_symbol(value) or DEFAULT_SYMBOL
    except ConceptError as exc:
        raise SettingError(f"QPIPE_DEFAULT_SYMBOL={value!r} is invalid: {exc}") from None
