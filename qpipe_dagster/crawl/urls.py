"""Pure URL logic for the crawler: normalisation, seed validation and same-site filtering.

Kept free of Scrapy so the rules that decide *what* gets crawled are unit-tested directly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urljoin, urlsplit, urlunsplit

from w3lib.url import canonicalize_url, safe_url_string

from qpipe_dagster.concepts import has_lone_surrogate, host_fault

__all__ = [
    "dedupe_key",
    "filter_links",
    "normalize_url",
    "redirect_fault",
    "site_of",
    "validate_seeds",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_url(href: str, base: str | None = None) -> str | None:
    """Absolute, fragment-free, percent-encoded http(s) URL, or None if it is not crawlable.

    `href` may be relative to `base`. Returns None for mailto:/javascript:/data: links,
    host-less URLs, malformed host names (spaces, empty labels), invalid ports or IPv6 literals,
    so one bad link never breaks a page.
    """
    if not isinstance(href, str):
        return None
    href = href.strip()
    if not href or any(c in href for c in "\r\n\t\0"):
        return None
    try:
        absolute = urljoin(base, href) if base else href
        parts = urlsplit(absolute)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            return None
        host = parts.hostname  # lowercased, brackets stripped
        port = parts.port  # raises ValueError on a non-numeric / out-of-range port
    except ValueError:
        return None
    if not host or parts.username is not None or parts.password is not None:
        return None
    if port == 0 or host_fault(host):
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    path = parts.path or "/"
    try:
        return safe_url_string(urlunsplit((scheme, netloc, path, parts.query, "")))
    except (ValueError, UnicodeError):  # e.g. an IDN label that cannot be encoded
        return None


def site_of(url: str) -> str:
    """The host a crawl stays on: lowercased hostname without a leading 'www.'.

    Ports and http/https are ignored so `http://x.com` and `https://www.x.com:8443` are
    one site; subdomains other than www are different sites (blog.x.com is not x.com).
    """
    host = urlsplit(url).hostname or ""
    return host[4:] if host.startswith("www.") else host


def dedupe_key(url: str) -> str:
    """Key under which two URLs count as the same page (query order, escapes normalised)."""
    return canonicalize_url(url, keep_fragments=False)


def filter_links(hrefs: Iterable[str], base: str, site: str) -> list[str]:
    """Crawlable same-site URLs from a page's raw hrefs, normalised, in order, no repeats."""
    out: list[str] = []
    seen: set[str] = set()
    for href in hrefs:
        url = normalize_url(href, base)
        if url is None or site_of(url) != site:
            continue
        key = dedupe_key(url)
        if key not in seen:
            seen.add(key)
            out.append(url)
    return out


def validate_seeds(seeds: object) -> list[str]:
    """Normalised seed URLs; ValueError naming the first bad one (before anything is crawled)."""
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Iterable):
        raise ValueError(f"seeds must be a list of URLs, got {type(seeds).__name__}: {seeds!r}")
    out: list[str] = []
    seen: set[str] = set()
    for seed in seeds:
        if not isinstance(seed, str):
            raise ValueError(f"invalid seed URL {seed!r}: not a string")
        url = normalize_url(seed)
        if url is None:
            reason = _why_not_crawlable(seed)
            raise ValueError(f"invalid seed URL {seed!r}: {reason}")
        key = dedupe_key(url)
        if key not in seen:  # a repeated seed is harmless; crawl it once
            seen.add(key)
            out.append(url)
    if not out:
        raise ValueError("no seed URLs given: pass at least one http(s) URL")
    return out


def redirect_fault(target: str, base: str) -> str | None:
    """Why a redirect from `base` to `target` (a Location header or a meta refresh) will not be
    followed, or None when it will. Same rule as links and seeds: absolute http(s) with a sane
    host; Scrapy would otherwise fail with a bare ValueError or quietly stop at the 3xx."""
    if normalize_url(target, base) is not None:
        return None
    if not target.strip():
        return "empty target (the page redirects to itself)"
    try:
        absolute = urljoin(base, target.strip())
    except ValueError:
        absolute = target
    return _why_not_crawlable(absolute)


def _why_not_crawlable(url: str) -> str:
    """Human reason `normalize_url` rejected a seed, for the error message."""
    if not url.strip():
        return "empty"
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", url.strip())
    scheme = match.group(1).lower() if match else ""
    if scheme not in _DEFAULT_PORTS:
        return "only absolute http:// or https:// URLs with a host are crawled"
    if has_lone_surrogate(url):
        return "contains a lone surrogate (not valid Unicode)"
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        return f"not a valid absolute URL ({exc})"
    if parts.username is not None or parts.password is not None:
        return "embedded credentials (user:password@) are not crawled"
    if not host:
        return "no host"
    if port == 0:
        return "port 0"
    fault = host_fault(host)
    if fault:
        return fault
    return "not a valid absolute URL (missing/invalid host or port, or embedded credentials)"
