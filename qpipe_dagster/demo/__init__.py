"""The offline demo: a small static site about one concept, and a real BTC-USD price sample."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from qpipe_dagster.concepts import Concept, ConceptRegistry, default_registry

SITE_DIR = Path(__file__).resolve().parent / "site"
PRICES_DIR = Path(__file__).resolve().parent / "prices"
DEMO_CONCEPT = "demo"
DEMO_SYMBOL = "BTC-USD"


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default backlog of 5 stalls Scrapy's bursts for a second


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # stdlib signature
        pass


def serve_demo_site(host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Serve the demo site from a daemon thread; port 0 picks a free one (see server_address)."""
    handler = functools.partial(_QuietHandler, directory=str(SITE_DIR))
    server = _Server((host, port), handler)
    threading.Thread(target=server.serve_forever, name="qpipe-demo-site", daemon=True).start()
    return server


def demo_concept(base_url: str) -> Concept:
    return Concept.create(DEMO_CONCEPT, [base_url.rstrip("/") + "/index.html"], DEMO_SYMBOL)


def register_demo(base_url: str, registry: ConceptRegistry | None = None) -> Concept:
    """Register `demo` with exactly this seed (the port may change between runs)."""
    registry = registry or default_registry()
    registry.remove(DEMO_CONCEPT)
    return registry.upsert(demo_concept(base_url))
