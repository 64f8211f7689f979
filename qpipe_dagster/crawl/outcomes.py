"""Pure helpers that turn a response or a download failure into the row's columns.

The `error` strings are part of the table's contract (people filter on them), so they
are produced in exactly one place and unit-tested.
"""

from __future__ import annotations

import zlib
from email.message import Message

from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadCancelledError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
    IgnoreRequest,
    ResponseDataLossError,
)
from twisted.internet import error as tx_error
from twisted.web._newclient import ParseError  # public API has no name for it
from twisted.web.client import ResponseNeverReceived

from qpipe_dagster.crawl.schema import SKIPPED_PREFIX

__all__ = [
    "CORRUPT_ENCODING",
    "MALFORMED_RESPONSE",
    "NO_RESPONSE",
    "REDIRECT_LOOP",
    "ROBOTS_DISALLOWED",
    "UNCRAWLABLE_REDIRECT",
    "UncrawlableRedirect",
    "describe_failure",
    "http_error",
    "is_html_mime",
    "parse_content_type",
    "skipped_non_html",
    "skipped_too_large",
]

ROBOTS_DISALLOWED = "robots.txt disallows this URL"
REDIRECT_LOOP = "redirect loop / too many redirects"
CORRUPT_ENCODING = "corrupt compressed body (Content-Encoding gzip/deflate/br/zstd)"
MALFORMED_RESPONSE = "malformed HTTP response"
NO_RESPONSE = "server closed the connection without a response"
UNCRAWLABLE_REDIRECT = "redirect to an uncrawlable URL"
_HTML_MIMES = frozenset({"text/html", "application/xhtml+xml"})


def parse_content_type(header: bytes | str | None) -> tuple[str | None, str | None]:
    """(mime type, charset) from a Content-Type header value; (None, None) when absent.

    The charset is only what the *HTTP header* declares: `<meta charset>` sniffing is the
    extract stage's job, and it needs to know whether the server said anything.
    """
    if header is None:
        return None, None
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    text = text.strip()
    if not text:
        return None, None
    msg = Message()
    msg["Content-Type"] = text
    mime = msg.get_content_type() if "/" in text.split(";", 1)[0] else None
    charset = msg.get_param("charset")
    if isinstance(charset, tuple):  # RFC 2231 form: (charset, language, value)
        charset = charset[2]
    charset = str(charset).strip().strip("'\"").lower() if charset else None
    return mime, (charset or None)


def is_html_mime(mime: str | None) -> bool:
    return mime in _HTML_MIMES


def skipped_non_html(mime: str | None) -> str:
    return f"{SKIPPED_PREFIX}non-HTML content type {mime or '(none)'}"


def skipped_too_large(max_bytes: int) -> str:
    return f"{SKIPPED_PREFIX}response larger than {max_bytes} bytes"


def http_error(status: int, *, has_location: bool = True) -> str:
    if 300 <= status < 400 and not has_location:
        return f"HTTP {status} without a Location header"
    return f"HTTP {status}"


class UncrawlableRedirect(Exception):
    """A 3xx whose Location the crawler will not follow (mailto:, ftp:, a malformed host...).

    Raised by the spider's redirect check before Scrapy's RedirectMiddleware, which would
    otherwise fail with a bare ValueError or pass the 3xx on as a plain HTTP error.
    """

    def __init__(self, status: int, location: str, reason: str) -> None:
        super().__init__(f"{UNCRAWLABLE_REDIRECT} {location!r}: {reason}")
        self.status = status
        self.location = location
        self.reason = reason


def _download_failure(exc: BaseException, attempts: int) -> str:
    """Name what went wrong inside Twisted's HTTP client, which Scrapy wraps in one type.

    The cause is a `ResponseFailed` carrying the underlying failures: a parse error means the
    server answered something that is not HTTP; a clean close before any byte means no answer.
    """
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    reasons = [getattr(r, "value", r) for r in getattr(cause, "reasons", ())]
    for reason in reasons:
        if isinstance(reason, ParseError) and len(reason.args) == 2:
            what, line = reason.args  # e.g. ('non-integer status code', b'THIS IS NOT HTTP')
            detail = f"{what} in {bytes(line)[:60]!r}"
        elif isinstance(reason, ParseError | ValueError):
            detail = str(reason)[:120]
        else:
            continue
        return f"{MALFORMED_RESPONSE}: {detail} ({_attempts(attempts)})"
    if isinstance(cause, ResponseNeverReceived):
        return f"{NO_RESPONSE} ({_attempts(attempts)})"
    return f"connection lost ({_attempts(attempts)})"


def _is_decompression_error(exc: BaseException) -> bool:
    """zlib (gzip/deflate), brotli and zstd raise their own error types, named 'error' or
    'ZstdError', from Scrapy's HttpCompressionMiddleware."""
    if isinstance(exc, zlib.error):
        return True
    kind = type(exc)
    return kind.__name__ == "ZstdError" or (kind.__module__, kind.__name__) == ("brotli", "error")


def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


REFUSED_ADDRESS = "refused"


def refused_address(reason: str) -> str:
    """The row error for a host that resolved only to non-public addresses."""
    return (
        f"{REFUSED_ADDRESS}: {reason}; this crawl connects to public addresses only"
        " (QPIPE_CRAWL_PRIVATE_ADDRESSES=refuse)"
    )


def describe_failure(exc: BaseException, *, attempts: int, timeout_s: float, max_bytes: int) -> str:
    """Short, stable reason for a request that produced no usable response."""
    if isinstance(exc, UncrawlableRedirect):
        return f"{UNCRAWLABLE_REDIRECT} {exc.location!r}: {exc.reason}"[:300]
    if isinstance(exc, IgnoreRequest):
        msg = str(exc)
        if "robots.txt" in msg:
            return ROBOTS_DISALLOWED
        if "redirection" in msg or "redirect" in msg:
            return REDIRECT_LOOP
        if "DOWNLOAD_MAXSIZE" in msg:  # decompressed body over the limit
            return skipped_too_large(max_bytes)
        return f"ignored: {msg}"[:200]
    if isinstance(exc, DownloadTimeoutError | tx_error.TimeoutError | tx_error.TCPTimedOutError):
        return f"timeout after {float(timeout_s)}s ({_attempts(attempts)})"
    if isinstance(exc, DownloadCancelledError):
        # The HTTP/1.1 handler cancels a download only when it exceeds DOWNLOAD_MAXSIZE
        # (declared Content-Length or bytes streamed so far); timeouts have their own type.
        return skipped_too_large(max_bytes)
    if isinstance(exc, CannotResolveHostError | tx_error.DNSLookupError):
        return "DNS lookup failed"
    if isinstance(exc, DownloadConnectionRefusedError | tx_error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ResponseDataLossError):
        return "connection closed before the full response arrived"
    if isinstance(exc, DownloadFailedError):
        return _download_failure(exc, attempts)
    if isinstance(exc, tx_error.ConnectionLost | tx_error.ConnectionDone):
        return f"connection lost ({_attempts(attempts)})"
    if isinstance(exc, tx_error.ConnectError):
        return f"connection failed: {exc}"[:200]
    if _is_decompression_error(exc):
        return f"{CORRUPT_ENCODING}: {exc}"[:200]
    if "SSL" in type(exc).__name__ or "TLS" in type(exc).__name__:
        return f"TLS error: {exc}"[:200]
    return f"{type(exc).__name__}: {exc}"[:200]


# Error classes for metrics (qpipe_pages_failed_total{error_class}): few, stable label values
# derived from the row errors above, so a dashboard can show *why* fetches fail.
_CLASS_PREFIXES = (
    (ROBOTS_DISALLOWED, "robots"),
    (REDIRECT_LOOP, "redirect"),
    (UNCRAWLABLE_REDIRECT, "redirect"),
    ("timeout", "timeout"),
    ("DNS", "dns"),
    ("connection", "connection"),
    (NO_RESPONSE, "connection"),
    (MALFORMED_RESPONSE, "protocol"),
    (CORRUPT_ENCODING, "protocol"),
    ("TLS", "tls"),
    (REFUSED_ADDRESS, "refused_address"),
    ("not fetched", "not_fetched"),
)


def error_class(error: str | None) -> str | None:
    """The class of a row's error (http_4xx, http_5xx, timeout, dns, connection, robots, ...);
    None for a fetched page and for a deliberate skip (not a failure)."""
    if error is None or error.startswith(SKIPPED_PREFIX):
        return None
    if error.startswith("HTTP "):
        code = error[5:8]
        return f"http_{code[0]}xx" if code[:1].isdigit() else "http_other"
    for prefix, cls in _CLASS_PREFIXES:
        if error.startswith(prefix):
            return cls
    return "other"


def failed_by_class(errors: list[str | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for err in errors:
        cls = error_class(err)
        if cls is not None:
            counts[cls] = counts.get(cls, 0) + 1
    return dict(sorted(counts.items()))
