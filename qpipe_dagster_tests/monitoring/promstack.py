"""Real Prometheus and Alertmanager processes for tests, on free loopback ports in a temp dir.

Both come from Debian (`prometheus`, `prometheus-alertmanager`; `make test` installs them when
it runs as root). Without them the tests that need them skip, saying what to install.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_YML = REPO / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = REPO / "deploy" / "alertmanager" / "alertmanager.yml"


def need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(
            f"{binary} not found: install Debian's {package} (`apt-get install {package}`;"
            " `make test` does it when run as root)"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


class Process:
    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


@contextlib.contextmanager
def prometheus(
    tmp: Path, targets: dict[str, str], alertmanager: str | None = None, interval: str = "1s"
) -> Iterator[str]:
    """The shipped prometheus.yml with loopback targets (job name -> host:port) and fast
    intervals; yields the base URL once it answers."""
    exe = need("prometheus", "prometheus")
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"] = {"scrape_interval": interval, "evaluation_interval": interval}
    config["rule_files"] = [str(ALERTS)]
    if alertmanager:
        config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager]
    else:
        del config["alerting"]
    config["scrape_configs"] = [
        {"job_name": job, "static_configs": [{"targets": [target]}], "scrape_timeout": interval}
        for job, target in targets.items()
    ]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    proc = Process(
        [
            exe,
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        tmp / "prometheus.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for(lambda: _answers(f"{url}/-/ready"), 60, "prometheus to start")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{proc.tail()}") from None
        yield url
    finally:
        proc.stop()


@contextlib.contextmanager
def alertmanager(tmp: Path, webhook_url: str) -> Iterator[str]:
    """The shipped alertmanager.yml, its webhook URL file pointed at `webhook_url` and its
    waits shortened; yields host:port."""
    exe = shutil.which("prometheus-alertmanager") or need("alertmanager", "prometheus-alertmanager")
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    url_file = tmp / "webhook_url"
    url_file.write_text(webhook_url)
    for receiver in config["receivers"]:
        for slack in receiver.get("slack_configs", []):
            slack["api_url_file"] = str(url_file)
    config["route"].update(group_wait="1s", group_interval="2s", repeat_interval="1h")
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    proc = Process(
        [
            exe,
            f"--config.file={path}",
            f"--storage.path={tmp / 'am'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        tmp / "alertmanager.log",
    )
    try:
        try:
            wait_for(lambda: _answers(f"http://127.0.0.1:{port}/-/ready"), 60, "alertmanager")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{proc.tail()}") from None
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


class Receiver:
    """A loopback HTTP server that keeps every POSTed JSON body (a Slack webhook stand-in)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer._lock:
                    outer.bodies.append(json.loads(raw or b"{}"))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self) -> list[dict]:
        with self._lock:
            return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def query(prom_url: str, promql: str) -> list[dict]:
    """The result vector of an instant query (raises on a query error)."""
    answer = get_json(f"{prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    assert answer["status"] == "success", answer
    return answer["data"]["result"]
