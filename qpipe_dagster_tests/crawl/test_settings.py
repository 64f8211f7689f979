"""CrawlSettings validation and dict round trip (the Pipes/CLI wire format)."""

from __future__ import annotations

import json

import pytest

from qpipe_dagster.crawl.settings import CrawlSettings


def test_defaults_are_production_sensible() -> None:
    s = CrawlSettings()
    assert (s.max_depth, s.max_pages, s.max_bytes) == (2, 200, 5_000_000)
    assert (s.timeout_s, s.retries, s.obey_robots, s.autothrottle) == (15.0, 2, True, True)
    assert s.concurrency_per_domain == 4 and s.user_agent.startswith("qpipe/")


def test_round_trip_through_json() -> None:
    s = CrawlSettings(max_depth=0, timeout_s=2.5, obey_robots=False, user_agent="bot/1")
    assert CrawlSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_partial_dict_uses_defaults() -> None:
    assert CrawlSettings.from_dict({"max_pages": 5}) == CrawlSettings(max_pages=5)


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ValueError, match=r"unknown CrawlSettings key\(s\): depth, timeout"):
        CrawlSettings.from_dict({"timeout": 3, "depth": 1, "retries": 1})


def test_from_dict_rejects_non_dict() -> None:
    with pytest.raises(ValueError, match="must be a JSON object/dict, got list"):
        CrawlSettings.from_dict([1, 2])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_depth", -1),
        ("max_depth", 1.5),
        ("max_pages", 0),
        ("max_pages", True),
        ("max_bytes", 0),
        ("max_bytes", "5MB"),
        ("timeout_s", 0),
        ("timeout_s", float("nan")),
        ("timeout_s", float("inf")),
        ("retries", -1),
        ("obey_robots", "yes"),
        ("autothrottle", 1),
        ("download_delay_s", -0.1),
        ("autothrottle_start_delay_s", -1),
        ("concurrency_per_domain", 0),
        ("user_agent", ""),
        ("user_agent", "bot\r\nX-Evil: 1"),
        ("user_agent", None),
    ],
)
def test_invalid_values_name_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"CrawlSettings\.{field} must be") as info:
        CrawlSettings(**{field: value})
    assert repr(value) in str(info.value)


def test_int_accepted_for_float_fields() -> None:
    assert CrawlSettings(timeout_s=3, download_delay_s=1).timeout_s == 3


def test_scrapy_settings_mapping() -> None:
    from qpipe_dagster.crawl.spider import scrapy_settings

    s = scrapy_settings(
        CrawlSettings(timeout_s=3.0, retries=0, max_bytes=1000, concurrency_per_domain=2)
    )
    assert (s["DOWNLOAD_TIMEOUT"], s["DOWNLOAD_MAXSIZE"]) == (3.0, 1000)
    assert (s["RETRY_ENABLED"], s["RETRY_TIMES"]) == (False, 0)
    assert s["CONCURRENT_REQUESTS_PER_DOMAIN"] == 2
    assert 429 in s["RETRY_HTTP_CODES"] and 503 in s["RETRY_HTTP_CODES"]
    d = scrapy_settings(CrawlSettings())
    assert d["ROBOTSTXT_OBEY"] is True and d["AUTOTHROTTLE_ENABLED"] is True
    assert d["AUTOTHROTTLE_START_DELAY"] == 1.0 and d["USER_AGENT"].startswith("qpipe/")
    # no asyncio reactor: see the comment in scrapy_settings (per-domain limit leak)
    assert "asyncio" not in d["TWISTED_REACTOR"]
