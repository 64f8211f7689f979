"""Crawl settings: one validated, serialisable value object.

The settings cross a process boundary (Dagster asset -> Pipes extras -> child crawler),
so they round-trip through plain dicts and are validated on both sides; a typo in a
config key fails loudly instead of silently falling back to a default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["CrawlSettings"]


def _check_int(name: str, value: object, *, minimum: int) -> None:
    # bool is an int subclass; `max_pages=True` is a config mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"CrawlSettings.{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"CrawlSettings.{name} must be >= {minimum}, got {value!r}")


def _check_float(name: str, value: object, *, minimum: float, strict: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"CrawlSettings.{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(f"CrawlSettings.{name} must be a finite number {bound}, got {value!r}")


@dataclass(frozen=True)
class CrawlSettings:
    """How far, how fast and how politely to crawl. Defaults suit a real public site."""

    max_depth: int = 2
    """Same-site links are followed up to this many hops from a seed (0 = seeds only)."""
    max_pages: int = 200
    """Cap on requested URLs (rows), seeds included."""
    max_bytes: int = 5_000_000
    """Responses larger than this are aborted and recorded as skipped."""
    timeout_s: float = 15.0
    """Per-attempt download timeout."""
    retries: int = 2
    """Extra attempts for transient errors (5xx, 408, 429, timeouts, refused connections)."""
    obey_robots: bool = True
    download_delay_s: float = 0.0
    """Minimum delay between requests to one domain (AutoThrottle never goes below it)."""
    autothrottle: bool = True
    """Adapt the per-domain delay to the server's latency (Scrapy AutoThrottle)."""
    autothrottle_start_delay_s: float = 1.0
    """AutoThrottle's initial per-domain delay before it has latency samples."""
    concurrency_per_domain: int = 4
    allow_private_addresses: bool = True
    """False: connect to public addresses only (no loopback, private, link-local or reserved
    ones, whatever the URL or DNS says). Production sets it with QPIPE_CRAWL_PRIVATE_ADDRESSES."""
    user_agent: str = "qpipe/0.1 (+https://github.com/qpipe/qpipe)"

    def __post_init__(self) -> None:
        _check_int("max_depth", self.max_depth, minimum=0)
        _check_int("max_pages", self.max_pages, minimum=1)
        _check_int("max_bytes", self.max_bytes, minimum=1)
        _check_float("timeout_s", self.timeout_s, minimum=0.0, strict=True)
        _check_int("retries", self.retries, minimum=0)
        for name in ("obey_robots", "autothrottle", "allow_private_addresses"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"CrawlSettings.{name} must be a bool, got {value!r}")
        _check_float("download_delay_s", self.download_delay_s, minimum=0.0, strict=False)
        _check_float(
            "autothrottle_start_delay_s",
            self.autothrottle_start_delay_s,
            minimum=0.0,
            strict=False,
        )
        _check_int("concurrency_per_domain", self.concurrency_per_domain, minimum=1)
        ua = self.user_agent
        if not isinstance(ua, str) or not ua.strip() or any(c in ua for c in "\r\n\0"):
            raise ValueError(
                f"CrawlSettings.user_agent must be a non-empty single-line string, got {ua!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the Pipes extras / --settings-json form)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> CrawlSettings:
        """Build from a (partial) dict; unknown keys are an error, missing keys use defaults."""
        if not isinstance(d, dict):
            raise ValueError(f"CrawlSettings must be a JSON object/dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ValueError(
                f"unknown CrawlSettings key(s): {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        return cls(**d)
