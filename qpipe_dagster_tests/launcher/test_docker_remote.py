"""The Docker GPU target on a remote engine: DOCKER_HOST=tcp://host:port is where the GPU
container is created (docker-py reads it, as the docker CLI does). A listener on 127.0.0.1 stands
in for the GPU machine's engine and records what the launcher asks it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dagster._core.errors import DagsterLaunchFailedError

from qpipe_dagster.launcher.gpu_router import DOCKER_GPU, LAUNCHER_TAG
from qpipe_dagster_tests.launcher.test_gpu_router import DOCKER_CFG, make_run, setup


class _Engine(BaseHTTPRequestHandler):
    """Answers every Engine API call with 500, after recording it."""

    def _answer(self) -> None:
        self.server.calls.append(f"{self.command} {self.path}")  # type: ignore[attr-defined]
        body = json.dumps({"message": "test engine: refused"}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_gpu_run_goes_to_the_engine_named_by_docker_host(monkeypatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Engine)
    server.calls = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{server.server_port}")
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.delenv("QPIPE_GPU_LAUNCHER", raising=False)
    try:
        with setup({"docker": DOCKER_CFG}) as (instance, workspace):
            run = make_run(instance, workspace, "all_assets", ["gpu_asset"])
            with pytest.raises(DagsterLaunchFailedError, match="test engine: refused"):
                instance.launch_run(run.run_id, workspace)
            assert instance.get_run_by_id(run.run_id).tags[LAUNCHER_TAG] == DOCKER_GPU
    finally:
        server.shutdown()
        server.server_close()
    assert server.calls, "the launcher never reached the engine named by DOCKER_HOST"
