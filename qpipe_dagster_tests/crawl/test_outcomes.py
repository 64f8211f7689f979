"""Row column derivation: Content-Type parsing and failure -> `error` text."""

from __future__ import annotations

import zlib

import pytest
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadCancelledError,
    DownloadConnectionRefusedError,
    DownloadTimeoutError,
    IgnoreRequest,
)

from qpipe_dagster.crawl.outcomes import describe_failure, is_html_mime, parse_content_type


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, (None, None)),
        (b"", (None, None)),
        (b"text/html", ("text/html", None)),
        (b"Text/HTML; Charset=Windows-1251", ("text/html", "windows-1251")),
        ('text/html; charset="utf-8"', ("text/html", "utf-8")),
        (b"application/pdf", ("application/pdf", None)),
        (b"garbage", (None, None)),
        (b"text/html; charset=", ("text/html", None)),
        ("text/html; charset=\xe9\xe9".encode("latin-1"), ("text/html", "\xe9\xe9")),
    ],
)
def test_parse_content_type(header: bytes | str | None, expected: tuple) -> None:
    assert parse_content_type(header) == expected


def test_is_html_mime() -> None:
    assert is_html_mime("text/html") and is_html_mime("application/xhtml+xml")
    assert not is_html_mime("application/pdf") and not is_html_mime(None)


@pytest.mark.parametrize(
    ("exc", "attempts", "expected"),
    [
        (IgnoreRequest("Forbidden by robots.txt"), 1, "robots.txt disallows this URL"),
        (IgnoreRequest("max redirections reached"), 1, "redirect loop / too many redirects"),
        (DownloadTimeoutError("took longer"), 3, "timeout after 2.0s (3 attempts)"),
        (DownloadTimeoutError("took longer"), 1, "timeout after 2.0s (1 attempt)"),
        (DownloadCancelledError(""), 1, "skipped: response larger than 5000000 bytes"),
        (CannotResolveHostError("nope"), 3, "DNS lookup failed"),
        (DownloadConnectionRefusedError("no"), 3, "connection refused"),
        (ZeroDivisionError("odd"), 1, "ZeroDivisionError: odd"),
    ],
)
def test_describe_failure(exc: BaseException, attempts: int, expected: str) -> None:
    assert describe_failure(exc, attempts=attempts, timeout_s=2, max_bytes=5_000_000) == expected


def test_corrupt_compressed_body_is_named() -> None:
    # used to read "error: Error -3 while decompressing data: ..." (zlib's class is `error`)
    import brotli

    for exc in (zlib.error("Error -3 while decompressing data"), brotli.error("decoder failed")):
        text = describe_failure(exc, attempts=1, timeout_s=1.0, max_bytes=10)
        assert text.startswith("corrupt compressed body (Content-Encoding"), text


def _download_failed(*reasons: BaseException, never_received: bool = False) -> BaseException:
    """What Scrapy raises for a failed Twisted download: its own type, the cause chained."""
    from scrapy.exceptions import DownloadFailedError
    from twisted.python.failure import Failure
    from twisted.web.client import ResponseFailed, ResponseNeverReceived

    kind = ResponseNeverReceived if never_received else ResponseFailed
    cause = kind([Failure(r) for r in reasons])
    exc = DownloadFailedError(str(cause))
    exc.__cause__ = cause
    return exc


def test_download_failures_say_what_the_server_sent() -> None:
    # all three used to read "connection lost (N attempts)"
    from twisted.internet.error import ConnectionDone, ConnectionLost
    from twisted.web._newclient import ParseError

    def text(exc: BaseException) -> str:
        return describe_failure(exc, attempts=2, timeout_s=1.0, max_bytes=10)

    not_http = _download_failed(ParseError("non-integer status code", b"SSH-2.0-OpenSSH"))
    assert text(not_http) == (
        "malformed HTTP response: non-integer status code in b'SSH-2.0-OpenSSH' (2 attempts)"
    )
    bad_length = _download_failed(ValueError("Value contains non-decimal digits: b'zz'"))
    assert text(bad_length).startswith("malformed HTTP response: Value contains non-decimal")
    silent = _download_failed(ConnectionDone(), never_received=True)
    assert text(silent) == "server closed the connection without a response (2 attempts)"
    cut = _download_failed(ConnectionLost())
    assert text(cut) == "connection lost (2 attempts)"
