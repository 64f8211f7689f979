"""A run worker killed with kill -9 mid-step leaves no process of its run behind.

A real run of `crawled_pages` (the multiprocess executor, so the step runs in its own process,
and the crawl in a Pipes child of that) against a loopback site that never answers; the run
worker (`dagster asset materialize`, which executes the run in its own process) is SIGKILLed
while the crawl waits, as the OOM killer would. Before, the step process and the crawl lived on
as orphans of init."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from qpipe_dagster.concepts import Concept, ConceptRegistry
from qpipe_dagster_tests.e2e.stack import REPO, wait_for


class Silent:
    """Accepts connections and never answers: the crawl's request waits on it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def _alive(procs: list[psutil.Process]) -> list[str]:
    left = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {_cmdline(proc)[:100]}")
        except psutil.NoSuchProcess:
            pass
    return left


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_sigkilled_run_worker_leaves_no_step_or_crawl_process(dagster_home: Path) -> None:
    site = Silent()
    ConceptRegistry(dagster_home / "qpipe" / "concepts.sqlite").upsert(
        Concept.create("slow", [site.url + "index.html"])
    )
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "PYTHONUNBUFFERED": "1"}
    subprocess.run(
        [sys.executable, "-c", "from dagster import DagsterInstance\n"
         "with DagsterInstance.get() as i: i.add_dynamic_partitions('concepts', ['slow'])"],
        env=env, check=True, timeout=120,
    )  # fmt: skip
    log = (dagster_home / "worker.log").open("wb")
    worker = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            *("asset", "materialize", "-m", "qpipe_dagster.definitions"),
            *("--select", "crawled_pages", "--partition", "slow"),
            "--config-json",
            '{"ops": {"crawled_pages": {"config": {"timeout_s": 600, "retries": 0}}}}',
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    seen: dict[int, psutil.Process] = {}
    try:

        def crawling() -> bool:
            for child in psutil.Process(worker.pid).children(recursive=True):
                seen.setdefault(child.pid, child)
            return bool(site.held) and any(
                "qpipe_dagster.crawl.runner" in _cmdline(p) for p in seen.values()
            )

        try:
            wait_for(crawling, 240, "the crawl's request to reach the silent site")
        except TimeoutError as exc:
            raise AssertionError(
                f"{exc}\n{(dagster_home / 'worker.log').read_text()[-3000:]}"
            ) from None
        steps = [p for p in seen.values() if "multiprocessing" in _cmdline(p)]
        assert steps, [(_cmdline(p)) for p in seen.values()]  # the step ran in its own process
        os.kill(worker.pid, signal.SIGKILL)  # as the OOM killer does
        worker.wait(10)
        deadline = time.monotonic() + 20
        while _alive(list(seen.values())) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(list(seen.values())) == []
    finally:
        for proc in [*seen.values()]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        if worker.poll() is None:
            worker.kill()
        log.close()
        site.close()


@pytest.mark.slow
def test_a_run_worker_that_lives_keeps_its_steps(dagster_home: Path) -> None:
    """The hook only arms the kernel's signal: steps of a healthy run worker run to the end
    (a step process started from a thread that then ended would be killed; none is)."""
    ConceptRegistry(dagster_home / "qpipe" / "concepts.sqlite").upsert(
        Concept.create("fine", ["https://example.com/a"], "BTC-USD")
    )
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    subprocess.run(
        [sys.executable, "-c", "from dagster import DagsterInstance\n"
         "with DagsterInstance.get() as i: i.add_dynamic_partitions('concepts', ['fine'])"],
        env=env, check=True, timeout=120,
    )  # fmt: skip
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            *("asset", "materialize", "-m", "qpipe_dagster.definitions"),
            *("--select", "market_prices", "--partition", "fine"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stdout + done.stderr
