"""Page metadata read straight from the parsed tree: title, publication date, language, links.

Cheap XPath lookups over the markup publishers fill in for search engines and social cards
(Open Graph, ``article:published_time``, JSON-LD, ``<time>``); much faster than a full
date-mining pass and right for article pages, which is what the pipeline crawls.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import lxml.etree as etree  # lxml has no stubs; the submodule import resolves
from lxml.html import HtmlElement

_TITLE_META = (
    "og:title",
    "twitter:title",
    "dc.title",
    "parsely-title",
    "sailthru.title",
)
_DATE_META = (
    "article:published_time",
    "og:published_time",
    "datepublished",
    "pubdate",
    "publishdate",
    "publish-date",
    "publish_date",
    "published_time",
    "date",
    "dc.date",
    "dc.date.issued",
    "dcterms.created",
    "dcterms.date",
    "parsely-pub-date",
    "sailthru.date",
    "article.published",
    "citation_publication_date",
    "citation_date",
    "original-publish-date",
    "cxenseparse:recs:publishtime",
)
_ISO_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)")
_COMPACT_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})(\d{2})(\d{2})(?!\d)")
_URL_DATE = re.compile(r"/((?:19|20)\d{2})[/-](\d{1,2})[/-](\d{1,2})(?:/|-|$)")
_TITLE_SEPARATORS = re.compile(r"\s+[|–—·»:-]\s+")
_HREFS = etree.XPath("//a/@href | //area/@href", smart_strings=False)
_HOST = re.compile(r"^(?:[^@/?#]*@)?(?:[\w-]+(?:\.[\w-]+)*\.?|\[[0-9a-fA-F:.]+\])(?::\d{0,5})?$")
_BAD_URL_CHARS = re.compile(r'[\s<>"\\]')
_SKIP_SCHEMES = ("javascript:", "mailto:", "tel:", "data:", "sms:", "ftp:", "file:")


def _meta_values(tree: HtmlElement) -> dict[str, str]:
    """First non-empty content of each ``<meta>`` keyed by lower-cased property/name/itemprop."""
    values: dict[str, str] = {}
    for meta in tree.iter("meta"):
        content = (meta.get("content") or "").strip()
        if not content:
            continue
        for attr in ("property", "name", "itemprop", "http-equiv"):
            key = (meta.get(attr) or "").strip().lower()
            if key and key not in values:
                values[key] = content
    return values


def _json_ld(tree: HtmlElement) -> Iterator[dict[str, Any]]:
    """Every JSON object found in ``application/ld+json`` scripts (broken JSON is skipped)."""
    for script in tree.iter("script"):
        if (script.get("type") or "").strip().lower() != "application/ld+json":
            continue
        try:
            data = json.loads(script.text or "")
        except (ValueError, RecursionError):
            continue
        stack: list[Any] = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(reversed(item))
            elif isinstance(item, dict):
                yield item
                graph = item.get("@graph")
                if isinstance(graph, list):
                    stack.extend(reversed(graph))


def _valid_date(year: int, month: int, day: int) -> dt.date | None:
    try:
        date = dt.date(year, month, day)
    except ValueError:
        return None
    latest = dt.date.today() + dt.timedelta(days=2)
    return date if dt.date(1995, 1, 1) <= date <= latest else None


def parse_date(value: str | None) -> str | None:
    """ISO ``YYYY-MM-DD`` from ISO-8601, ``YYYY/MM/DD``, ``YYYYMMDD`` or RFC 2822 strings."""
    if not value:
        return None
    value = value.strip()
    for pattern in (_ISO_DATE, _COMPACT_DATE):
        match = pattern.search(value)
        if match:
            date = _valid_date(*(int(g) for g in match.groups()))
            if date:
                return date.isoformat()
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    date = _valid_date(parsed.year, parsed.month, parsed.day)
    return date.isoformat() if date else None


def extract_published(tree: HtmlElement, url: str | None = None) -> str | None:
    """Publication date: meta tags, JSON-LD, ``<time>``, then a date in the URL path."""
    meta = _meta_values(tree)
    for key in _DATE_META:
        date = parse_date(meta.get(key))
        if date:
            return date
    for item in _json_ld(tree):
        date = parse_date(str(item.get("datePublished") or item.get("dateCreated") or ""))
        if date:
            return date
    for time in tree.iter("time"):
        date = parse_date(time.get("datetime") or time.get("content"))
        if date:
            return date
    if url:
        match = _URL_DATE.search(urlsplit(url).path)
        if match:
            date = _valid_date(*(int(g) for g in match.groups()))
            if date:
                return date.isoformat()
    return None


def _clean_title(title: str) -> str:
    """Drop a trailing/leading site name (``"Story - Site"``): keep the longest segment."""
    title = " ".join(title.split())
    parts = _TITLE_SEPARATORS.split(title)
    if len(parts) > 1:
        longest = max(parts, key=len)
        if len(longest.split()) >= 3:
            return longest
    return title


def extract_title(tree: HtmlElement) -> str | None:
    """Headline from social/SEO meta, JSON-LD, the first ``<h1>``, then ``<title>``."""
    meta = _meta_values(tree)
    for key in _TITLE_META:
        if meta.get(key):
            return " ".join(meta[key].split())
    for item in _json_ld(tree):
        headline = item.get("headline")
        if isinstance(headline, str) and headline.strip():
            return " ".join(headline.split())
    for tag in ("h1", "title"):
        for element in tree.iter(tag):
            text = element.text_content().strip()
            if text:
                return _clean_title(text) if tag == "title" else " ".join(text.split())
    return None


def title_variants(tree: HtmlElement) -> list[str]:
    """Every form the headline takes on the page (meta title, first ``<h1>``, ``<title>``)."""
    variants = [extract_title(tree) or ""]
    for tag in ("h1", "title"):
        element = next(tree.iter(tag), None)
        if element is not None:
            text = " ".join(element.text_content().split())
            variants += [text, _clean_title(text)]
    return [v for v in dict.fromkeys(variants) if v]


def declared_language(tree: HtmlElement) -> str | None:
    """Language the page declares: ``<html lang>``, ``content-language`` or ``og:locale``."""
    root = tree.getroottree().getroot()
    lang = root.get("lang") or root.get("xml:lang")
    if lang and lang.strip():
        return lang.strip()
    meta = _meta_values(tree)
    return meta.get("content-language") or meta.get("og:locale") or meta.get("language")


def _absolute_link(href: str, base: str, origin: str) -> str | None:
    href = href.strip()
    if not href or href[0] == "#" or href[:11].lower().startswith(_SKIP_SCHEMES):
        return None
    lowered = href[:8].lower()
    if lowered.startswith(("http://", "https://")):
        absolute = href  # the common case: skip urljoin, which dominates the cost otherwise
    elif href[0] == "/" and href[1:2] not in ("/", "\\") and origin and "/./" not in href:
        absolute = origin + href  # root-relative, the next most common case
        if "/../" in href:
            absolute = urljoin(base, href)
    else:
        try:
            absolute = urljoin(base, href)
        except ValueError:
            return None
    absolute = absolute.partition("#")[0].replace(" ", "%20")
    scheme, sep, rest = absolute.partition("://")
    if scheme.lower() not in ("http", "https") or not sep:
        return None
    if not _HOST.match(re.split(r"[/?]", rest, maxsplit=1)[0]):
        return None
    if _BAD_URL_CHARS.search(absolute):
        return None
    return absolute


def extract_links(tree: HtmlElement, url: str) -> tuple[str, ...]:
    """Absolute http(s) links of the page in document order, fragments stripped, de-duplicated."""
    base = url
    for href in tree.xpath("//base/@href"):
        if href.strip():
            with contextlib.suppress(ValueError):
                base = urljoin(url, href.strip())
            break
    parts = urlsplit(base)
    origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
    seen: dict[str, None] = {}
    # many pages repeat the same href dozens of times: resolve each distinct one once
    for href in dict.fromkeys(_HREFS(tree)):
        absolute = _absolute_link(href, base, origin)
        if absolute:
            seen.setdefault(absolute, None)
    return tuple(seen)
