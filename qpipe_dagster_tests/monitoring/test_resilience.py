"""Retries and circuit breakers against real servers made to fail: a local PostgreSQL cluster
stopped and restarted mid-call, and a loopback HTTP server that answers 503s, then recovers."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from qpipe_dagster.resilience import breakers, guard
from qpipe_dagster.resilience.breakers import read_states
from qpipe_dagster.resilience.guard import CircuitOpenError, guarded_call
from qpipe_dagster_tests.postgres_cluster import (  # noqa: F401  (fixtures)
    _as_owner,
    _free_port,
    find_bindir,
    postgres_cluster,
    postgres_url,
)


class StoppableCluster:
    """A PostgreSQL cluster of this test's own, which the test stops and starts."""

    def __init__(self, root: Path, bindir: Path, user: str | None, port: int) -> None:
        self.root, self.bindir, self.user, self.port = root, bindir, user, port
        self.data = root / "data"

    def _ctl(self, *args: str) -> None:
        options = (
            f"-k {self.root / 'sock'} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off"
        )
        subprocess.run(
            _as_owner(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                 str(self.root / "server.log"), "-w", "-t", "60", "-o", options, *args],
                self.user,
            ),
            check=True, capture_output=True, timeout=90, cwd=self.root,
        )  # fmt: skip

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def cluster() -> Iterator[StoppableCluster]:
    import os
    import pwd

    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found: apt-get install postgresql")
    user = None
    if os.geteuid() == 0:
        user = next((n for n in ("postgres", "nobody") if _has_user(pwd, n)), None)
    root = Path(tempfile.mkdtemp(prefix="qpipe-pg-stop-"))
    (root / "sock").mkdir()
    if user:
        entry = pwd.getpwnam(user)
        for path in (root, root / "sock"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    subprocess.run(
        _as_owner([str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres",
                   "--auth=trust", "--no-sync"], user),
        check=True, capture_output=True, timeout=120, cwd=root,
    )  # fmt: skip
    pg = StoppableCluster(root, bindir, user, _free_port())
    pg.start()
    try:
        yield pg
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def _has_user(pwd, name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(autouse=True)
def _own_breakers(dagster_home: Path) -> None:
    """Each test's breakers live in its own DAGSTER_HOME (the state file is shared by every
    process of one installation)."""


def _select_one(dsn: str, calls: list[float]) -> int:
    import psycopg2

    calls.append(time.monotonic())
    conn = psycopg2.connect(dsn, connect_timeout=2)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_a_restarting_postgres_costs_retries_not_a_failure(cluster: StoppableCluster) -> None:
    cluster.stop()
    restart = threading.Timer(2.0, cluster.start)
    restart.start()
    calls: list[float] = []
    try:
        assert guarded_call("postgres", _select_one, cluster.dsn, calls) == 1
    finally:
        restart.join()
    assert len(calls) >= 2  # refused while down, retried with growing waits, then through
    # waits grow: exponential backoff (jitter only adds to the floor of each step)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert all(g >= 0.1 for g in gaps), gaps
    assert read_states()["postgres"].state == "closed"
    assert read_states()["postgres"].fail_counter == 0


def test_postgres_down_opens_the_breaker_and_it_closes_after_recovery(
    cluster: StoppableCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guard, "ATTEMPTS", 2)
    monkeypatch.setattr(breakers, "RESET_TIMEOUT_S", 2.0)
    cluster.stop()
    calls: list[float] = []
    import psycopg2

    for _ in range(breakers.FAIL_MAX - 1):
        with pytest.raises(psycopg2.OperationalError):
            guarded_call("postgres", _select_one, cluster.dsn, calls)
    with pytest.raises(psycopg2.OperationalError):  # the 5th spent call opens the breaker
        guarded_call("postgres", _select_one, cluster.dsn, calls)
    made = len(calls)
    with pytest.raises(CircuitOpenError, match=r"circuit breaker for postgres is open since 20"):
        guarded_call("postgres", _select_one, cluster.dsn, calls)
    assert len(calls) == made  # refused without touching the server
    state = read_states()["postgres"]
    assert state.state == "open" and state.fail_counter == breakers.FAIL_MAX

    cluster.start()
    time.sleep(2.2)  # the reset timeout: one trial call goes through and closes it
    assert guarded_call("postgres", _select_one, cluster.dsn, calls) == 1
    assert read_states()["postgres"].state == "closed"


class Flaky:
    """Loopback HTTP server: `fail` answers of `status`, then 200 {"ok": true}."""

    def __init__(self, fail: int, status: int = 503) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                code = status if outer.hits <= fail else 200
                body = b'{"ok": true}' if code == 200 else b"unavailable"
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/meta"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _get(url: str) -> dict:
    resp = httpx.get(url, timeout=5)
    resp.raise_for_status()
    return resp.json()


def test_503s_are_retried_until_the_server_recovers() -> None:
    flaky = Flaky(fail=3)
    try:
        assert guarded_call("weaviate", _get, flaky.url) == {"ok": True}
    finally:
        flaky.server.shutdown()
    assert flaky.hits == 4
    assert read_states()["weaviate"].state == "closed"


def test_a_4xx_is_the_callers_fault_not_retried_not_counted() -> None:
    flaky = Flaky(fail=99, status=404)
    try:
        with pytest.raises(httpx.HTTPStatusError):
            guarded_call("weaviate", _get, flaky.url)
    finally:
        flaky.server.shutdown()
    assert flaky.hits == 1
    assert read_states()["weaviate"].fail_counter == 0


def test_breaker_state_is_shared_by_processes(dagster_home: Path) -> None:
    """A breaker opened in one process (a run worker) is open for another (the exporter)."""
    import sys

    code = (
        "from qpipe_dagster.resilience.breakers import breaker\n"
        "b = breaker('qstash')\n"
        "for _ in range(5):\n"
        "    try:\n"
        "        b.call(lambda: (_ for _ in ()).throw(ConnectionRefusedError(111, 'refused')))\n"
        "    except Exception:\n"
        "        pass\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert read_states()["qstash"].state == "open"
    with pytest.raises(CircuitOpenError, match="circuit breaker for qstash is open"):
        guarded_call("qstash", lambda: None)


def _open_breaker(system: str) -> None:
    cb = breakers.breaker(system)
    for _ in range(breakers.FAIL_MAX):
        with contextlib.suppress(ConnectionRefusedError):
            cb.call(_refuse)


def _refuse() -> None:
    raise ConnectionRefusedError(111, "Connection refused")


def test_ready_shows_breakers_and_an_open_inbox_breaker_makes_it_unready(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from qpipe_dagster_tests.webhook_sensor.conftest import start_receiver

    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the receiver's home: one breaker file
    (home / "dagster.yaml").write_text((Path(__file__).parents[2] / "dagster.yaml").read_text())
    server, rcv = start_receiver(tmp_path, inbox_path=postgres_url)
    with server:
        ready = rcv.client.get(rcv.base + "/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["breakers"] == {
            "postgres": "closed",
            "qstash": "closed",
            "weaviate": "closed",
        }
        _open_breaker("weaviate")  # not the receiver's dependency: still ready
        ready = rcv.client.get(rcv.base + "/ready")
        assert ready.status_code == 200 and ready.json()["breakers"]["weaviate"] == "open"
        _open_breaker("postgres")  # the inbox's database: not ready
        ready = rcv.client.get(rcv.base + "/ready")
        assert ready.status_code == 503
        assert "circuit open: postgres (the inbox)" in ready.json()["problems"]
    rcv.client.close()


def test_doctor_reports_each_breaker(dagster_home: Path) -> None:
    from qpipe_dagster.ops.doctor import FAIL, OK, check_breakers

    env = {"DAGSTER_HOME": str(dagster_home)}
    assert check_breakers(env).status == OK
    assert check_breakers(env).detail == "postgres closed; qstash closed; weaviate closed"
    _open_breaker("qstash")
    check = check_breakers(env)
    assert check.status == FAIL
    assert "qstash open since 20" in check.detail and "(5 failed calls)" in check.detail


def test_the_postgres_inbox_rides_out_a_restart_and_then_its_breaker_opens(
    cluster: StoppableCluster,
) -> None:
    """The sensor's reads of a PostgreSQL inbox go through retries and the breaker: a restart
    costs a few seconds; a server that stays down is refused at once after FAIL_MAX calls."""
    from webhook_sensor.inbox import InboxUnavailable, open_inbox

    inbox = open_inbox(cluster.dsn)
    assert inbox.depth() == 0
    inbox.close()
    cluster.stop()
    restart = threading.Timer(2.0, cluster.start)
    restart.start()
    try:
        assert inbox.depth() == 0  # refused while down, retried, then answered
    finally:
        restart.join()
    assert by_system_state("postgres") == "closed"

    inbox.close()
    cluster.stop()
    for _ in range(breakers.FAIL_MAX):
        with pytest.raises(InboxUnavailable, match=r"(?i)connection refused"):
            inbox.depth()
    started = time.monotonic()
    with pytest.raises(InboxUnavailable, match=r"circuit breaker for postgres@127\.0\.0\.1:"):
        inbox.depth()
    assert time.monotonic() - started < 1.0  # refused at once, no retries against a dead server
    assert by_system_state("postgres") == "open"


def by_system_state(system: str) -> str:
    return (
        breakers.by_system(read_states())
        .get(system, breakers.BreakerState(system, "closed", 0, None, 0))
        .state
    )


def test_qstash_client_opens_its_breaker_on_503s_and_not_on_401s() -> None:
    from qpipe_dagster.qstash.client import QStashClient, QStashError

    flaky = Flaky(fail=10_000, status=503)
    refusing = Flaky(fail=10_000, status=401)
    try:
        base = flaky.url.rsplit("/v1/meta", 1)[0]
        with QStashClient("token", base, max_retries=0, backoff_s=0.01) as client:
            for _ in range(breakers.FAIL_MAX):
                with pytest.raises(QStashError, match="QStash answered 503"):
                    client.list_schedules()
            hits = flaky.hits
            with pytest.raises(QStashError, match=r"circuit breaker for qstash@127\.0\.0\.1:"):
                client.list_schedules()
            assert flaky.hits == hits  # refused without a request
        base = refusing.url.rsplit("/v1/meta", 1)[0]
        with QStashClient("token", base, max_retries=0) as client:
            for _ in range(breakers.FAIL_MAX + 2):
                with pytest.raises(QStashError, match="QStash answered 401"):
                    client.list_schedules()  # a wrong token: the caller's, never counted
    finally:
        flaky.server.shutdown()
        refusing.server.shutdown()
