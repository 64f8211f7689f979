"""Crawl stage: Scrapy in a child process -> `crawled_pages` Arrow IPC file (one row per URL).

Pure modules (settings, schema, urls, outcomes) import neither Dagster nor the reactor;
`runner` is the child-process entry point (`python -m qpipe_dagster.crawl.runner`).
"""

from qpipe_dagster.crawl.schema import CRAWLED_PAGES_SCHEMA
from qpipe_dagster.crawl.settings import CrawlSettings

__all__ = ["CRAWLED_PAGES_SCHEMA", "CrawlSettings"]
