"""The crawled_pages run config shows the crawl stage's own defaults, written once."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from qpipe_dagster.crawl.settings import CrawlSettings
from qpipe_dagster.defs.knowledge import CrawlConfig


def test_run_config_defaults_are_the_stage_defaults() -> None:
    assert CrawlConfig().crawl_settings(allow_private_addresses=True) == CrawlSettings()
    assert CrawlConfig().crawl_settings(allow_private_addresses=False) == CrawlSettings(
        allow_private_addresses=False
    )


def test_run_config_values_reach_the_stage() -> None:
    config = CrawlConfig(
        max_depth=0,
        max_pages=3,
        max_bytes=2048,
        timeout_s=1.5,
        retries=0,
        obey_robots=False,
        extra_seed_urls=["https://example.com/x"],
    )
    assert config.crawl_settings(allow_private_addresses=True) == CrawlSettings(
        max_depth=0, max_pages=3, max_bytes=2048, timeout_s=1.5, retries=0, obey_robots=False
    )


def test_run_config_bounds_stay() -> None:
    with pytest.raises(ValidationError):
        CrawlConfig(max_bytes=1023)
    with pytest.raises(ValidationError):
        CrawlConfig(timeout_s=0)
