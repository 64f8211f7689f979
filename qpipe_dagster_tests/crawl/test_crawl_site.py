"""End-to-end crawls of a real loopback HTTP server, each in a real child process."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from qpipe_dagster.crawl.runner import crawl_subprocess, read_crawled_pages
from qpipe_dagster.crawl.schema import CRAWLED_PAGES_SCHEMA
from qpipe_dagster.crawl.settings import CrawlSettings
from qpipe_dagster_tests.crawl.conftest import (
    CP1251_BODY,
    CP1251_TEXT,
    GARBAGE,
    Reply,
    Route,
    Site,
    closed_port,
    page,
    serve,
)

FAST = CrawlSettings(
    max_depth=2,
    max_pages=100,
    max_bytes=200_000,
    timeout_s=1.0,
    retries=1,
    autothrottle_start_delay_s=0.0,
)
DEAD_DNS = "http://nonexistent-host.invalid/"


@pytest.fixture(scope="module")
def crawl(main_site: Site, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One crawl of the whole test site plus two unreachable seeds; rows keyed by url."""
    out = tmp_path_factory.mktemp("crawl") / "pages.arrow"
    refused = f"http://127.0.0.1:{closed_port()}/"
    table = crawl_subprocess([main_site.url("/"), DEAD_DNS, refused], FAST, out, timeout_s=120)
    rows = {r["url"]: r for r in table.to_pylist()}
    assert len(rows) == table.num_rows, "one row per requested URL"
    return {"table": table, "rows": rows, "out": out, "refused": refused}


def test_output_file_schema_and_sort(crawl: dict[str, Any]) -> None:
    table = read_crawled_pages(crawl["out"])
    assert table.schema.equals(CRAWLED_PAGES_SCHEMA)
    urls = table.column("url").to_pylist()
    assert urls == sorted(urls)
    fetched = table.column("fetched_at").to_pylist()
    assert all(abs((datetime.now(UTC) - t).total_seconds()) < 600 for t in fetched)


def test_normal_pages_links_and_depth(main_site: Site, crawl: dict[str, Any]) -> None:
    rows = crawl["rows"]
    root = rows[main_site.url("/")]
    assert root["status"] == 200 and root["error"] is None and root["depth"] == 0
    assert root["encoding"] == "utf-8" and root["content_type"].startswith("text/html")
    assert root["content_hash"] == hashlib.sha256(root["html"]).hexdigest()
    assert b'href="/a"' in root["html"]
    assert rows[main_site.url("/a")]["depth"] == 1
    assert rows[main_site.url("/a/deep1")]["depth"] == 2
    # depth 3 is beyond max_depth=2: never requested
    assert main_site.url("/a/deep2") not in rows
    assert main_site.count("/a/deep2") == 0
    # /a is linked three times (once with a fragment) and fetched once
    assert main_site.count("/a") == 1
    assert not any("#" in u for u in rows)


def test_external_and_non_http_links_not_followed(
    main_site: Site, other_site: Site, crawl: dict[str, Any]
) -> None:
    rows = crawl["rows"]
    assert other_site.count("/external") == 0
    assert not any("localhost" in u or "external.invalid" in u for u in rows)
    assert not any(u.startswith(("mailto:", "javascript:")) for u in rows)
    seeds_and_site = [u for u in rows if not u.startswith(main_site.base)]
    assert sorted(seeds_and_site) == sorted([DEAD_DNS, crawl["refused"]])


def test_robots_disallowed_is_a_row_and_never_fetched(
    main_site: Site, crawl: dict[str, Any]
) -> None:
    row = crawl["rows"][main_site.url("/private/secret")]
    assert row["error"] == "robots.txt disallows this URL"
    assert row["status"] is None and row["html"] is None
    assert main_site.count("/private/secret") == 0
    assert main_site.count("/robots.txt") == 1


def test_redirects(main_site: Site, crawl: dict[str, Any]) -> None:
    rows = crawl["rows"]
    loop = rows[main_site.url("/loop1")]
    assert loop["error"] == "redirect loop / too many redirects"
    assert loop["final_url"] is None and loop["html"] is None
    assert main_site.url("/loop2") not in rows  # a hop of the redirect, not a page of its own
    ok = rows[main_site.url("/redirect")]
    assert ok["error"] is None and ok["status"] == 200
    assert ok["final_url"] == main_site.url("/b")


def test_http_errors_and_retries(main_site: Site, crawl: dict[str, Any]) -> None:
    rows = crawl["rows"]
    missing = rows[main_site.url("/missing")]
    assert (missing["status"], missing["error"], missing["html"]) == (404, "HTTP 404", None)
    assert main_site.count("/missing") == 1  # 404 is not transient: no retry
    boom = rows[main_site.url("/error500")]
    assert (boom["status"], boom["error"]) == (500, "HTTP 500")
    assert main_site.count("/error500") == 2  # retried once (retries=1), then recorded
    flaky = rows[main_site.url("/flaky")]
    assert (flaky["status"], flaky["error"]) == (200, None)
    assert b"flaky ok" in flaky["html"]
    assert main_site.count("/flaky") == 2


def test_non_html_recorded_without_body(main_site: Site, crawl: dict[str, Any]) -> None:
    for path, mime in [("/doc.pdf", "application/pdf"), ("/img.png", "image/png")]:
        row = crawl["rows"][main_site.url(path)]
        assert row["status"] == 200
        assert row["content_type"] == mime
        assert row["error"] == f"skipped: non-HTML content type {mime}"
        assert row["html"] is None and row["content_hash"] is None


def test_too_large_pages_skipped(main_site: Site, crawl: dict[str, Any]) -> None:
    # /huge declares Content-Length; /huge-stream does not (cut off while streaming)
    for path in ("/huge", "/huge-stream"):
        row = crawl["rows"][main_site.url(path)]
        assert row["error"] == "skipped: response larger than 200000 bytes", path
        assert row["html"] is None
        assert main_site.count(path) == 1  # a size skip is final: not retried


def test_slow_server_times_out(main_site: Site, crawl: dict[str, Any]) -> None:
    row = crawl["rows"][main_site.url("/slow")]
    assert row["error"] == "timeout after 1.0s (2 attempts)"
    assert row["status"] is None and row["html"] is None
    assert main_site.count("/slow") == 2


def test_windows_1251_charset_from_header_bytes_intact(
    main_site: Site, crawl: dict[str, Any]
) -> None:
    row = crawl["rows"][main_site.url("/cp1251")]
    assert row["encoding"] == "windows-1251"
    assert row["html"] == CP1251_BODY
    assert CP1251_TEXT in row["html"].decode(row["encoding"])


def test_hostile_html_keeps_rows_and_links(main_site: Site, crawl: dict[str, Any]) -> None:
    rows = crawl["rows"]
    garbage = rows[main_site.url("/garbage")]
    assert garbage["error"] is None and garbage["html"] == GARBAGE
    assert garbage["encoding"] is None  # no charset in the header: left to extraction
    empty = rows[main_site.url("/empty")]
    assert (empty["status"], empty["error"], empty["html"]) == (200, None, b"")
    assert empty["content_hash"] == hashlib.sha256(b"").hexdigest()
    # <base href> is honoured; the broken links on the page are dropped, not fatal
    assert rows[main_site.url("/based-dir/child")]["depth"] == 2
    assert main_site.url("/child") not in rows


def test_unreachable_hosts(crawl: dict[str, Any]) -> None:
    rows = crawl["rows"]
    assert rows[DEAD_DNS]["error"] == "DNS lookup failed"
    assert rows[crawl["refused"]]["error"] == "connection refused"
    assert rows[DEAD_DNS]["depth"] == 0 and rows[DEAD_DNS]["status"] is None


def test_every_linked_url_has_exactly_one_row(main_site: Site, crawl: dict[str, Any]) -> None:
    expected = {
        "/",
        "/a",
        "/b",
        "/a/deep1",
        "/private/secret",
        "/loop1",
        "/missing",
        "/error500",
        "/flaky",
        "/doc.pdf",
        "/img.png",
        "/huge",
        "/huge-stream",
        "/slow",
        "/cp1251",
        "/redirect",
        "/garbage",
        "/empty",
        "/based",
        "/based-dir/child",
    }
    site_rows = {u[len(main_site.base) :] for u in crawl["rows"] if u.startswith(main_site.base)}
    assert site_rows == expected


def test_page_cap(wide_site: Site, tmp_path: Path) -> None:
    settings = CrawlSettings(
        max_depth=3, max_pages=7, timeout_s=2.0, autothrottle=False, concurrency_per_domain=2
    )
    table = crawl_subprocess([wide_site.url("/")], settings, tmp_path / "p.arrow", timeout_s=60)
    assert table.num_rows == 7
    assert all(e is None for e in table.column("error").to_pylist())
    # breadth-first: the cap keeps the root and its direct links, none of depth 2
    assert sorted(table.column("depth").to_pylist()) == [0] + [1] * 6
    fetched = sum(n for p, n in wide_site.hits.items() if p != "/robots.txt")
    assert fetched == 7
    # politeness: never more than concurrency_per_domain requests in flight at the server,
    # yet they do overlap (6 slow pages, 2 at a time)
    assert wide_site.max_in_flight == 2


# -- bad input ------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qpipe_dagster.crawl.runner", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "ftp://x.org/", "--out", "o.arrow"], "invalid seed URL 'ftp://x.org/'"),
        (["--seed", "not a url", "--out", "o.arrow"], "invalid seed URL 'not a url'"),
        (
            ["--seed", "http://x.org/", "--out", "o.arrow", "--settings-json", "{bad"],
            "--settings-json is not valid JSON",
        ),
        (
            ["--seed", "http://x.org/", "--out", "o.arrow", "--settings-json", '{"depth": 3}'],
            "unknown CrawlSettings key(s): depth",
        ),
        (
            ["--seed", "http://x.org/", "--out", "o.arrow", "--settings-json", '{"retries": -1}'],
            "CrawlSettings.retries must be >= 0, got -1",
        ),
        (["--out", "o.arrow"], "--seed"),
    ],
)
def test_cli_bad_arguments(args: list[str], message: str, tmp_path: Path) -> None:
    proc = _cli(*[a.replace("o.arrow", str(tmp_path / "o.arrow")) for a in args])
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "o.arrow").exists()


def test_cli_all_failures_still_exit_zero(tmp_path: Path) -> None:
    out = tmp_path / "o.arrow"
    fast = json.dumps({"retries": 0, "autothrottle": False})
    proc = _cli(
        "--seed", f"http://127.0.0.1:{closed_port()}/x", "--out", str(out), "--settings-json", fast
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["pages_failed"] == 1 and summary["pages_ok"] == 0
    assert read_crawled_pages(out).column("error").to_pylist() == ["connection refused"]


def test_crawl_subprocess_validates_before_spawning(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"invalid seed URL 'javascript:alert\(1\)'"):
        crawl_subprocess(["javascript:alert(1)"], CrawlSettings(), tmp_path / "o.arrow")
    with pytest.raises(ValueError, match="3 seed URLs exceed max_pages=2"):
        crawl_subprocess(
            ["http://a.org/", "http://b.org/", "http://c.org/"],
            CrawlSettings(max_pages=2),
            tmp_path / "o.arrow",
        )


def test_crawl_subprocess_reports_child_stderr(tmp_path: Path) -> None:
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\necho 'child exploded' >&2\nexit 3\n")
    fake_python.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"(?s)code 3.*child exploded"):
        crawl_subprocess(
            ["http://127.0.0.1:1/"], CrawlSettings(), tmp_path / "o.arrow", python=str(fake_python)
        )


def test_read_crawled_pages_rejects_other_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.arrow"
    junk.write_bytes(b"not arrow")
    with pytest.raises(ValueError, match="not a readable Arrow IPC file"):
        read_crawled_pages(junk)
    other = tmp_path / "other.arrow"
    with (
        pa.OSFile(str(other), "wb") as sink,
        pa.ipc.new_file(sink, pa.schema([("x", pa.int8())])) as w,
    ):
        w.write_table(pa.table({"x": pa.array([1], pa.int8())}))
    with pytest.raises(ValueError, match="schema differs"):
        read_crawled_pages(other)


def test_sigterm_keeps_every_accepted_row(tmp_path: Path) -> None:
    """A cancelled run (Dagster sends SIGTERM) still writes a row for every requested URL."""
    n = 30  # more than Scrapy's 16 downloader slots, so some are still queued at SIGTERM
    routes: dict[str, Route] = {"/": lambda _n: Reply(body=page(*[f"/s{i}" for i in range(n)]))}
    for i in range(n):
        routes[f"/s{i}"] = lambda _n: Reply(body=page(), sleep_s=0.2)
    out = tmp_path / "o.arrow"
    fast = json.dumps({"autothrottle": False, "concurrency_per_domain": 2, "retries": 0})
    with serve(routes) as site:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qpipe_dagster.crawl.runner",
                "--seed",
                site.url("/"),
                "--out",
                str(out),
                "--settings-json",
                fast,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        deadline = time.monotonic() + 30
        while site.count("/s0") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    table = read_crawled_pages(out)
    assert table.num_rows == n + 1
    errors = table.column("error").to_pylist()
    stopped = errors.count("not fetched: crawl stopped (shutdown)")
    assert stopped >= 1 and errors.count(None) + stopped == n + 1


def test_frames_followed_and_corrupt_compression_named(tmp_path: Path) -> None:
    """A frameset seed used to crawl nothing past itself (only <a>/<area> were followed); a
    body that fails to decompress was recorded as 'error: Error -3 while decompressing ...'."""
    html = "text/html; charset=utf-8"
    frameset = b"<html><frameset><frame src='/nav'><frame src='/main'></frameset></html>"
    routes: dict[str, Route] = {
        "/": lambda _n: Reply(body=frameset, content_type=html),
        "/nav": lambda _n: Reply(body=page("/gz", "/deflate", "/br")),
        "/main": lambda _n: Reply(body=page(title="main")),
        "/gz": lambda _n: Reply(
            body=b"\x1f\x8b\x08\x00" + b"junk" * 20,
            content_type=html,
            headers={"Content-Encoding": "gzip"},
        ),
        "/deflate": lambda _n: Reply(
            body=b"not deflate", content_type=html, headers={"Content-Encoding": "deflate"}
        ),
        "/br": lambda _n: Reply(
            body=b"not brotli", content_type=html, headers={"Content-Encoding": "br"}
        ),
    }
    with serve(routes) as site:
        table = crawl_subprocess([site.url("/")], FAST, tmp_path / "f.arrow", timeout_s=60)
    rows = {r["url"][len(site.base) :]: r for r in table.to_pylist()}
    assert rows["/main"]["error"] is None and b"main" in rows["/main"]["html"]
    assert rows["/nav"]["depth"] == 1
    for path in ("/gz", "/deflate", "/br"):
        assert rows[path]["error"].startswith("corrupt compressed body (Content-Encoding"), path
        assert rows[path]["html"] is None


@contextmanager
def raw_server(payload: bytes) -> Iterator[str]:
    """A loopback TCP server that answers every connection with `payload` verbatim, then closes:
    for responses an HTTP library cannot produce (not HTTP at all, broken headers, nothing)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                with suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(payload)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def test_uncrawlable_redirects_and_malformed_responses_are_named(tmp_path: Path) -> None:
    """A redirect to mailto:/ftp:/a broken host used to end as 'ValueError: Missing scheme in
    request url' or a bare 'HTTP 301'; a reply that is not HTTP at all as 'connection lost'."""
    html = "text/html; charset=utf-8"

    def moved(location: str | None, status: int = 302) -> Route:
        headers = {} if location is None else {"Location": location}
        return lambda _n: Reply(status, headers=headers, content_type=None)

    def refresh(target: str) -> Route:
        body = f'<html><head><meta http-equiv="refresh" content="0;url={target}"></head><body>kept</body></html>'
        return lambda _n: Reply(body=body.encode(), content_type=html)

    routes: dict[str, Route] = {
        "/": lambda _n: Reply(
            body=page("/mailto", "/ipv6", "/ftp", "/none", "/empty", "/ok", "/m-mailto", "/m-ipv6")
        ),
        "/mailto": moved("mailto:someone@example.com"),
        "/ipv6": moved("http://[broken/"),
        "/ftp": moved("ftp://example.com/file", 301),
        "/none": moved(None),
        "/empty": moved(""),
        "/ok": moved("/landing", 307),
        "/landing": lambda _n: Reply(body=page(title="landing")),
        "/m-mailto": refresh("mailto:someone@example.com"),
        "/m-ipv6": refresh("http://[broken/"),
    }
    with (
        serve(routes) as site,
        raw_server(b"THIS IS NOT HTTP\r\n\r\nhello") as not_http,
        raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n<p>hi</p>") as bad_header,
        raw_server(b"") as silent,
    ):
        seeds = [site.url("/"), not_http, bad_header, silent]
        table = crawl_subprocess(seeds, FAST, tmp_path / "r.arrow", timeout_s=90)
    rows = {r["url"]: r for r in table.to_pylist()}
    by_path = {url[len(site.base) :]: row for url, row in rows.items() if url.startswith(site.base)}
    refused = "redirect to an uncrawlable URL"
    assert by_path["/mailto"]["status"] == 302
    assert by_path["/mailto"]["error"] == (
        f"{refused} 'mailto:someone@example.com': "
        "only absolute http:// or https:// URLs with a host are crawled"
    )
    assert by_path["/ipv6"]["error"].startswith(f"{refused} 'http://[broken/': ")
    assert "Invalid IPv6 URL" in by_path["/ipv6"]["error"]
    assert by_path["/ftp"]["status"] == 301
    assert by_path["/ftp"]["error"].startswith(f"{refused} 'ftp://example.com/file': ")
    assert by_path["/none"]["error"] == "HTTP 302 without a Location header"
    assert (
        by_path["/empty"]["error"] == f"{refused} '': empty target (the page redirects to itself)"
    )
    assert by_path["/ok"]["error"] is None and by_path["/ok"]["final_url"] == site.url("/landing")
    for path in ("/m-mailto", "/m-ipv6"):  # the page itself arrived: keep it, do not follow
        assert by_path[path]["error"] is None and b"kept" in by_path[path]["html"], path
    assert rows[not_http]["error"] == (
        "malformed HTTP response: non-integer status code in b'THIS IS NOT HTTP' (2 attempts)"
    )
    assert rows[bad_header]["error"].startswith("malformed HTTP response: ")
    assert "zz" in rows[bad_header]["error"]
    assert rows[silent]["error"] == "server closed the connection without a response (2 attempts)"
    assert all(row["html"] is None for row in (rows[not_http], rows[bad_header], rows[silent]))
