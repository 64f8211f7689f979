"""A static site on 127.0.0.1 for the crawl benchmarks: fixed routes, robots.txt allowing all."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs under bursts: 1 s retransmits


def serve_routes(
    routes: dict[str, bytes], latency_s: float = 0.0
) -> tuple[ThreadingHTTPServer, str]:
    """Serve `routes` (path -> HTML) on a free port, each answer after `latency_s` (a stand-in
    for a network round trip); returns the server and its base URL ending in '/'."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if latency_s:
                time.sleep(latency_s)
            if self.path == "/robots.txt":
                body, ctype, status = b"User-agent: *\nAllow: /\n", "text/plain", 200
            elif self.path in routes:
                body, ctype, status = routes[self.path], "text/html; charset=utf-8", 200
            else:
                body, ctype, status = b"not found", "text/plain", 404
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"
