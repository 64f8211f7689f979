"""`make run`'s stack as a test fixture: devstack in its own process group, on free ports.

The stack is started exactly as a user starts it (`python -m qpipe_dagster.devstack`), only with
free ports and a private DAGSTER_HOME, so what the browser sees is what `make run` serves.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Variables that would point the stack at something other than its private home or at servers.
_SCRUBBED_ENV = (
    "WEAVIATE_URL",
    "WEAVIATE_API_KEY",
    "QPIPE_ASSET_DIR",
    "QPIPE_LANCE_PATH",
    "QPIPE_PRICES_DIR",
    "QPIPE_INBOX_PATH",
    "QPIPE_RECEIVER_URL",
    "QSTASH_TOKEN",
    "QSTASH_CURRENT_SIGNING_KEY",
    "QSTASH_NEXT_SIGNING_KEY",
)


class StackError(RuntimeError):
    """The stack did not come up; the message carries the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.5
) -> object:
    """Poll `condition` until it returns something truthy; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (OSError, ValueError) as exc:  # not listening yet, half-written JSON, ...
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_exc})"
    )


@dataclass
class DevStack:
    """A running devstack; `ui_url`, `receiver_url` and `env` are what a user's shell would have."""

    home: Path
    host: str
    ui_port: int
    demo_port: int
    receiver_port: int
    log_path: Path
    metrics_port: int = 0  # 0: a free one, picked at start
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.ui_port}"

    @property
    def demo_url(self) -> str:
        return f"http://{self.host}:{self.demo_port}/"

    @property
    def receiver_url(self) -> str:
        return f"http://{self.host}:{self.receiver_port}/api/qstash"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def start(self, timeout: float = 120.0) -> DevStack:
        self.metrics_port = self.metrics_port or free_port(self.host)
        self.env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        self.env.update(
            DAGSTER_HOME=str(self.home),
            QPIPE_HOST=self.host,
            QPIPE_UI_PORT=str(self.ui_port),
            QPIPE_DEMO_PORT=str(self.demo_port),
            QPIPE_RECEIVER_PORT=str(self.receiver_port),
            QPIPE_METRICS_PORT=str(self.metrics_port),
            QPIPE_RECEIVER_URL=self.receiver_url,
            PYTHONUNBUFFERED="1",
        )
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qpipe_dagster.devstack"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown reaches every child
            # A shell's background job (`make test &`, CI runners) ignores SIGINT and exec passes
            # that on; restore it so Ctrl-C semantics (devstack's clean stop) work in the child.
            preexec_fn=_default_sigint,
        )
        log.close()
        try:
            wait_for(self._ui_ready, timeout, f"the Dagster UI at {self.ui_url}/server_info")
            wait_for(self._receiver_ready, 30, f"the receiver at {self.receiver_url}")
        except (TimeoutError, StackError) as exc:
            self.stop()
            raise StackError(f"{exc}\n--- devstack log (tail) ---\n{self.log_tail()}") from None
        return self

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise StackError(f"devstack exited with code {self.proc.returncode}")

    def _ui_ready(self) -> bool:
        self._check_alive()
        status, body = http_get(f"{self.ui_url}/server_info")
        return status == 200 and "dagster_webserver_version" in json.loads(body)

    def _receiver_ready(self) -> bool:
        self._check_alive()
        base = self.receiver_url.rsplit("/api/", 1)[0]
        return http_get(f"{base}/health")[0] == 200

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        """Ask the webserver's GraphQL API (used only to cross-check what the browser shows)."""
        req = urllib.request.Request(
            f"{self.ui_url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            payload = json.loads(resp.read())
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def stop(self, timeout: float = 30.0) -> None:
        """SIGINT the whole process group (devstack forwards it), then SIGKILL what is left."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait_s in ((signal.SIGINT, timeout), (signal.SIGTERM, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            if _group_gone(self.proc, pgid, wait_s):
                break
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.proc = None


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _group_gone(leader: subprocess.Popen, pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader.poll()  # reap the leader so an exited one does not keep the group alive as a zombie
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        time.sleep(0.2)
    return False


def start_stack(home: Path, log_path: Path, host: str = "127.0.0.1") -> DevStack:
    return DevStack(
        home=home,
        host=host,
        ui_port=free_port(host),
        demo_port=free_port(host),
        receiver_port=free_port(host),
        log_path=log_path,
    ).start()
