"""A real HTTP server on 127.0.0.1 serving a small in-memory site with every failure mode.

Each behaviour lives at its own path so one crawl exercises them all; the server records
every request path so tests can assert what the crawler did (and did not) fetch.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

CP1251_TEXT = "Торговая стратегия: пробой канала Дончиана"
CP1251_BODY = f"<html><head><title>{CP1251_TEXT}</title></head><body><p>{CP1251_TEXT}</p></body></html>".encode(
    "cp1251"
)
GARBAGE = bytes(range(256)) * 8 + b"<a href='/b'>\xff\xfe</a" + b"\x00<<<>>>&&&"
SLOW_SLEEP_S = 1.6
HUGE_BYTES = 300_000  # tests crawl with max_bytes=200_000


def page(*hrefs: str, title: str = "page") -> bytes:
    links = "".join(f'<a href="{h}">link</a>\n' for h in hrefs)
    return f"<!doctype html><html><head><title>{title}</title></head><body>{links}</body></html>".encode()


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str | None = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    sleep_s: float = 0.0
    content_length: bool = True


Route = Callable[[int], Reply]  # called with how many times this path was requested


@dataclass
class Site:
    """Routes by path, plus a thread-safe log of what was requested."""

    routes: dict[str, Route]
    hits: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    base: str = ""
    in_flight: int = 0
    max_in_flight: int = 0

    def url(self, path: str) -> str:
        return self.base + path

    def count(self, path: str) -> int:
        with self.lock:
            return self.hits[path]


def _handler_for(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server API
            with site.lock:
                site.hits[self.path] += 1
                n = site.hits[self.path]
                site.in_flight += 1
                site.max_in_flight = max(site.max_in_flight, site.in_flight)
            try:
                self._reply(n)
            finally:
                with site.lock:
                    site.in_flight -= 1

        def _reply(self, n: int) -> None:
            route = site.routes.get(self.path)
            reply = route(n) if route else Reply(404, page(title="not found"))
            if reply.sleep_s:
                time.sleep(reply.sleep_s)
            try:
                self.send_response(reply.status)
                if reply.content_type is not None:
                    self.send_header("Content-Type", reply.content_type)
                if reply.content_length:
                    self.send_header("Content-Length", str(len(reply.body)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the crawler gave up (timeout / max size): that is the point

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops SYNs under bursts (1 s stalls)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # aborted connections are expected in these tests


@contextmanager
def serve(routes: dict[str, Route]) -> Iterator[Site]:
    """Run `routes` on an ephemeral 127.0.0.1 port for the duration of the block."""
    site = Site(routes)
    server = _QuietServer(("127.0.0.1", 0), _handler_for(site))
    site.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    """A loopback port with nothing listening (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fixed(reply: Reply) -> Route:
    return lambda _n: reply


def main_site_routes(other_base: str) -> dict[str, Route]:
    """The site behind the main crawl; `other_base` is a second server that must stay unvisited."""
    html = "text/html; charset=utf-8"
    return {
        "/robots.txt": _fixed(
            Reply(body=b"User-agent: *\nDisallow: /private/\n", content_type="text/plain")
        ),
        "/": _fixed(
            Reply(
                body=page(
                    "/a",
                    "/a#section",  # same page as /a once the fragment is stripped
                    "b",
                    "/private/secret",
                    f"{other_base}/external",  # other host: never followed
                    "http://external.invalid/x",
                    "mailto:someone@example.com",
                    "javascript:void(0)",
                    "http://[broken-ipv6/",
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
                ),
                content_type=html,
            )
        ),
        "/a": _fixed(Reply(body=page("/a/deep1", "/", "/b"), content_type=html)),
        "/b": _fixed(Reply(body=page("/a"), content_type=html)),
        "/a/deep1": _fixed(Reply(body=page("/a/deep2"), content_type=html)),  # depth 2
        "/a/deep2": _fixed(Reply(body=page(), content_type=html)),  # depth 3: not crawled
        "/private/secret": _fixed(Reply(body=page(title="secret"), content_type=html)),
        "/loop1": _fixed(Reply(302, headers={"Location": "/loop2"}, content_type=None)),
        "/loop2": _fixed(Reply(302, headers={"Location": "/loop1"}, content_type=None)),
        "/missing": _fixed(Reply(404, page(title="missing"), content_type=html)),
        "/error500": _fixed(Reply(500, page(title="boom"), content_type=html)),
        "/flaky": lambda n: Reply(503, b"busy") if n == 1 else Reply(body=page(title="flaky ok")),
        "/doc.pdf": _fixed(
            Reply(body=b"%PDF-1.4\n" + b"0" * 100_000, content_type="application/pdf")
        ),
        "/img.png": _fixed(
            Reply(body=b"\x89PNG\r\n\x1a\n" + b"0" * 5_000, content_type="image/png")
        ),
        "/huge": _fixed(Reply(body=b"<html>" + b"x" * HUGE_BYTES, content_type=html)),
        "/huge-stream": _fixed(
            Reply(body=b"<html>" + b"x" * HUGE_BYTES, content_type=html, content_length=False)
        ),
        "/slow": _fixed(Reply(body=page(title="slow"), sleep_s=SLOW_SLEEP_S)),
        "/cp1251": _fixed(Reply(body=CP1251_BODY, content_type="text/html; charset=windows-1251")),
        "/redirect": _fixed(Reply(301, headers={"Location": "/b"}, content_type=None)),
        # hostile HTML: binary junk, an empty body, and a <base> that relocates links
        "/garbage": _fixed(Reply(body=GARBAGE, content_type="text/html")),
        "/empty": _fixed(Reply(body=b"", content_type=html)),
        "/based": _fixed(
            Reply(
                body=b'<html><head><base href="/based-dir/"></head>'
                b'<a href="child">c</a><a href="http://[::1">bad</a><a href=>x</a></html>',
                content_type=html,
            )
        ),
        "/based-dir/child": _fixed(Reply(body=page(title="child"), content_type=html)),
    }


@pytest.fixture(scope="session")
def other_site() -> Iterator[Site]:
    with serve({"/external": _fixed(Reply(body=page()))}) as site:
        yield site


@pytest.fixture(scope="session")
def main_site(other_site: Site) -> Iterator[Site]:
    other = other_site.base.replace("127.0.0.1", "localhost")  # a different host name
    with serve(main_site_routes(other)) as site:
        yield site


@pytest.fixture
def wide_site() -> Iterator[Site]:
    """Root links to 30 pages (each slow, linking to 5 more): page cap and concurrency."""
    routes: dict[str, Route] = {
        "/": _fixed(Reply(body=page(*[f"/p{i}" for i in range(30)]))),
    }
    for i in range(30):
        routes[f"/p{i}"] = _fixed(Reply(body=page(*[f"/p{i}/{j}" for j in range(5)]), sleep_s=0.15))
    with serve(routes) as site:
        yield site
