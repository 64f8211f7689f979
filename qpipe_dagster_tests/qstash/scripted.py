"""A loopback HTTP server that answers from a script: for the client's error paths.

The emulator in conftest.py behaves like a healthy QStash; this one answers exactly what a test
queues (a status, headers and raw body bytes, or a stall past the client's timeout), so the
client's handling of 4xx/5xx/429, HTML pages and malformed JSON runs over real HTTP.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stall_s: float = 0.0  # sleep before answering (a timeout test)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedServer:
    base: str = ""
    script: list[Answer] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    default: Answer = field(default_factory=lambda: Answer(200, b'{"messageId": "msg_x"}'))

    def queue(self, *answers: Answer) -> None:
        self.script.extend(answers)


def json_answer(status: int, text: str, **headers: str) -> Answer:
    return Answer(status, text.encode(), {"Content-Type": "application/json", **headers})


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    state = ScriptedServer()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                state.seen.append(
                    Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                         body)
                )  # fmt: skip
                answer = state.script.pop(0) if state.script else state.default
            if answer.stall_s:
                time.sleep(answer.stall_s)
            self.send_response(answer.status)
            for k, v in answer.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        do_GET = do_POST = do_DELETE = do_PUT = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
