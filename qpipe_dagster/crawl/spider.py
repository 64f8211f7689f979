"""The Scrapy spider: same-site breadth crawl that turns *every* request into one row.

Deduplication is done here (all requests carry `dont_filter=True`) because Scrapy's
dupefilter drops requests silently: a redirect back to an already-seen URL would vanish
without reaching the errback, and its row would be lost. With our own bookkeeping, loops
run into REDIRECT_MAX_TIMES and surface as an errback like every other failure.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import scrapy
from scrapy import signals
from scrapy.exceptions import StopDownload
from scrapy.http import HtmlResponse, Request, Response, TextResponse
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.response import get_base_url, get_meta_refresh
from twisted.python.failure import Failure
from w3lib.url import safe_url_string

from qpipe_dagster.crawl.outcomes import (
    UncrawlableRedirect,
    describe_failure,
    http_error,
    is_html_mime,
    parse_content_type,
    refused_address,
    skipped_non_html,
)
from qpipe_dagster.crawl.resolver import refusal
from qpipe_dagster.crawl.settings import CrawlSettings
from qpipe_dagster.crawl.urls import dedupe_key, filter_links, redirect_fault, site_of

__all__ = ["RedirectCheck", "Row", "SiteSpider", "scrapy_settings"]

logger = logging.getLogger(__name__)

Row = dict[str, Any]
_META = "qpipe"  # request.meta key holding (requested url, depth, site)


def scrapy_settings(settings: CrawlSettings) -> dict[str, Any]:
    """Scrapy settings for one crawl, derived only from `CrawlSettings`."""
    return {
        "USER_AGENT": settings.user_agent,
        "ROBOTSTXT_OBEY": settings.obey_robots,
        "DOWNLOAD_TIMEOUT": settings.timeout_s,
        "DOWNLOAD_MAXSIZE": settings.max_bytes,
        "DOWNLOAD_WARNSIZE": 0,  # the max-size skip is recorded in the table instead
        "RETRY_ENABLED": settings.retries > 0,
        "RETRY_TIMES": settings.retries,
        "RETRY_HTTP_CODES": [500, 502, 503, 504, 522, 524, 408, 429],
        "DOWNLOAD_DELAY": settings.download_delay_s,
        "AUTOTHROTTLE_ENABLED": settings.autothrottle,
        "AUTOTHROTTLE_START_DELAY": max(settings.autothrottle_start_delay_s, 0.0),
        "AUTOTHROTTLE_MAX_DELAY": max(60.0, settings.download_delay_s),
        "CONCURRENT_REQUESTS": max(16, settings.concurrency_per_domain),
        "CONCURRENT_REQUESTS_PER_DOMAIN": settings.concurrency_per_domain,
        "DEPTH_LIMIT": 0,  # depth is enforced by the spider, per seed
        "REDIRECT_MAX_TIMES": 10,
        # Runs just before Scrapy's redirect middlewares (580 meta refresh, 600 Location).
        "DOWNLOADER_MIDDLEWARES": {f"{__name__}.RedirectCheck": 650},
        # Scrapy 2.19 + the asyncio reactor schedules downloads as tasks *after* filling
        # the per-domain slot, so bursts exceed CONCURRENT_REQUESTS_PER_DOMAIN (measured:
        # 16 in flight with a limit of 4). Twisted's own reactor starts them synchronously
        # and keeps the limit; nothing in this spider needs asyncio.
        "TWISTED_REACTOR": "twisted.internet.epollreactor.EPollReactor"
        if sys.platform.startswith("linux")
        else "twisted.internet.selectreactor.SelectReactor",
        "COOKIES_ENABLED": False,
        "TELNETCONSOLE_ENABLED": False,
        "REMOTE_CONTROL_ENABLED": False,
        "LOG_LEVEL": "WARNING",
        "RETRY_GIVE_UP_LOG_LEVEL": "WARNING",  # the row records it; not an ERROR of ours
        # Breadth-first, so the page cap keeps the pages nearest to the seeds.
        "DEPTH_PRIORITY": 1,
        "SCHEDULER_DISK_QUEUE": "scrapy.squeues.PickleFifoDiskQueue",
        "SCHEDULER_MEMORY_QUEUE": "scrapy.squeues.FifoMemoryQueue",
        **(
            {}
            if settings.allow_private_addresses
            else {"DNS_RESOLVER": "qpipe_dagster.crawl.resolver.PublicAddressResolver"}
        ),
    }


def _header(response: Response, name: bytes) -> bytes | None:
    value = response.headers.get(name)
    return bytes(value) if value is not None else None


_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


class RedirectCheck:
    """Check a redirect's target before Scrapy follows it.

    A `Location` of mailto:, ftp: or with a malformed host made Scrapy's RedirectMiddleware
    fail with a bare `ValueError` (or stop at the 3xx, reported as a plain "HTTP 301"); the
    row now says which target was refused and why. A meta refresh to such a target is not
    followed, and the page that carried it keeps its body.
    """

    def __init__(self, settings: Any) -> None:
        self._meta_refresh = settings.getbool("METAREFRESH_ENABLED")
        self._meta_max_delay = settings.getint("METAREFRESH_MAXDELAY")
        self._meta_ignore_tags = settings.getlist("METAREFRESH_IGNORE_TAGS")

    @classmethod
    def from_crawler(cls, crawler: Any) -> RedirectCheck:
        return cls(crawler.settings)

    def process_response(self, request: Request, response: Response, spider: Any = None) -> Any:
        if request.meta.get("dont_redirect") or _META not in request.meta:
            return response
        raw = response.headers.get(b"Location")
        if response.status in _REDIRECT_CODES and raw is not None:
            try:
                location = safe_url_string(raw)
            except (ValueError, UnicodeError):
                location = bytes(raw).decode("latin-1")
            fault = redirect_fault(location, request.url)
            if fault is not None:
                raise UncrawlableRedirect(response.status, location, fault)
        elif self._meta_refresh and isinstance(response, HtmlResponse):
            try:
                delay, target = get_meta_refresh(response, ignore_tags=self._meta_ignore_tags)
                refused = bool(target) and redirect_fault(target, request.url) is not None
            except ValueError:  # Scrapy cannot even join the target with the page URL
                delay, refused = 0.0, True
            if refused and delay < self._meta_max_delay:
                request.meta["dont_redirect"] = True  # keep this page; do not follow
        return response


class SiteSpider(scrapy.Spider):
    """Crawl `seeds`, following links on the seed's own site up to `settings.max_depth`."""

    name = "qpipe_site"

    def __init__(
        self,
        seeds: Sequence[str],
        crawl_settings: CrawlSettings,
        on_row: Callable[[Row], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.seeds = list(seeds)
        self.crawl_settings = crawl_settings
        self.rows: list[Row] = []
        self._on_row = on_row
        self._seen: set[str] = set()
        self._pending: dict[str, tuple[str, int, str]] = {}  # requested url -> meta, no row yet
        self._cap_logged = False

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> SiteSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider._on_headers, signal=signals.headers_received)
        crawler.signals.connect(spider._on_closed, signal=signals.spider_closed)
        return spider

    # -- scheduling ------------------------------------------------------------------

    def _request(self, url: str, depth: int, site: str) -> Request | None:
        """A request for `url` unless already seen or the page cap is reached."""
        key = dedupe_key(url)
        if key in self._seen:
            return None
        if len(self._seen) >= self.crawl_settings.max_pages:
            if not self._cap_logged:
                logger.warning("page cap max_pages=%d reached", self.crawl_settings.max_pages)
                self._cap_logged = True
            return None
        self._seen.add(key)
        self._pending[url] = (url, depth, site)
        return Request(
            url,
            callback=self.parse,
            errback=self.on_error,
            dont_filter=True,
            meta={_META: (url, depth, site)},
        )

    async def start(self) -> AsyncIterator[Request]:
        for seed in self.seeds:
            request = self._request(seed, 0, site_of(seed))
            if request is not None:
                yield request

    # -- outcomes --------------------------------------------------------------------

    def _emit(self, request: Request, **cols: Any) -> None:
        self._emit_for(request.meta[_META], **cols)

    def _emit_for(self, meta: tuple[str, int, str], **cols: Any) -> None:
        url, depth, _site = meta
        if self._pending.pop(url, None) is None:
            logger.warning("second outcome for %s ignored: %s", url, cols.get("error"))
            return
        row: Row = {
            "url": url,
            "final_url": None,
            "status": None,
            "fetched_at": datetime.now(UTC),
            "content_type": None,
            "encoding": None,
            "html": None,
            "content_hash": None,
            "depth": depth,
            "error": None,
        }
        row.update(cols)
        self.rows.append(row)
        if self._on_row is not None:
            try:
                self._on_row(row)
            except Exception:  # progress reporting must never cost a page its links
                logger.warning("on_row callback failed for %s", url, exc_info=True)

    def _on_closed(self, spider: Any, reason: str) -> None:
        """Safety net: a request that never reached parse/on_error still gets its row."""
        for meta in list(self._pending.values()):
            self._emit_for(meta, error=f"not fetched: crawl stopped ({reason})")

    def _on_headers(self, headers: Any, body_length: int, request: Request, spider: Any) -> None:
        """Stop non-HTML downloads after the headers: their bodies are never stored."""
        if _META not in request.meta:  # robots.txt and other internal requests
            return
        mime, _ = parse_content_type(headers.get(b"Content-Type"))
        if mime is not None and not is_html_mime(mime):
            raise StopDownload(fail=False)

    def parse(self, response: Response) -> Any:
        request = response.request
        assert request is not None
        _url, depth, site = request.meta[_META]
        raw_ct = _header(response, b"Content-Type")
        mime, charset = parse_content_type(raw_ct)
        cols = {
            "final_url": response.url,
            "status": response.status,
            "content_type": raw_ct.decode("latin-1") if raw_ct is not None else None,
            "encoding": charset,
        }
        html_like = is_html_mime(mime) or (mime is None and isinstance(response, HtmlResponse))
        if not html_like or "download_stopped" in response.flags:
            self._emit(request, error=skipped_non_html(mime), **cols)
            return
        body = response.body
        self._emit(request, html=body, content_hash=hashlib.sha256(body).hexdigest(), **cols)
        if depth >= self.crawl_settings.max_depth:
            return
        try:
            links = self._links(response, site)
        except Exception:  # a page we cannot parse still keeps its row
            logger.warning("could not extract links from %s", response.url, exc_info=True)
            return
        for link in links:
            next_request = self._request(link, depth + 1, site)
            if next_request is not None:
                yield next_request

    @staticmethod
    def _links(response: Response, site: str) -> list[str]:
        if not isinstance(response, TextResponse):
            response = HtmlResponse(response.url, body=response.body, headers=response.headers)
        if not response.body.strip():
            return []
        # a frameset page has no links of its own: its frames are its pages
        hrefs = response.xpath("//a/@href | //area/@href | //frame/@src").getall()
        return filter_links(hrefs, get_base_url(response), site)

    def on_error(self, failure: Failure) -> None:
        request: Request = failure.request  # type: ignore[attr-defined]
        exc = failure.value
        assert exc is not None  # an errback's Failure always carries the exception
        if isinstance(exc, HttpError):
            response = exc.response
            raw_ct = _header(response, b"Content-Type")
            self._emit(
                request,
                final_url=response.url,
                status=response.status,
                content_type=raw_ct.decode("latin-1") if raw_ct is not None else None,
                encoding=parse_content_type(raw_ct)[1],
                error=http_error(response.status, has_location=b"Location" in response.headers),
            )
            return
        if isinstance(exc, UncrawlableRedirect):
            self._emit(request, final_url=request.url, status=exc.status, error=describe_failure(
                exc, attempts=1, timeout_s=self.crawl_settings.timeout_s,
                max_bytes=self.crawl_settings.max_bytes,
            ))  # fmt: skip
            return
        attempts = int(request.meta.get("retry_times", 0)) + 1
        refused = None if self.crawl_settings.allow_private_addresses else refusal(
            urlsplit(request.url).hostname
        )  # fmt: skip
        self._emit(
            request,
            error=refused_address(refused)
            if refused
            else describe_failure(
                exc,
                attempts=attempts,
                timeout_s=self.crawl_settings.timeout_s,
                max_bytes=self.crawl_settings.max_bytes,
            ),
        )
