"""Two receivers and two sensor processes on one PostgreSQL cluster: a burst of deliveries, each
sent to both receivers (a QStash redelivery landing on the other replica), becomes exactly one
run per message. Everything is real and in its own process: uvicorn receivers, two
`dagster-daemon run` (two deployments, each its own instance) evaluating the real
qstash_inbox_sensor through a gRPC code location, the inbox and the concept registry in one
throwaway PostgreSQL database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from qpipe_dagster_tests.webhook_sensor.conftest import CURRENT, NEXT, free_port, make_token

REPO = Path(__file__).resolve().parents[2]
DEFS = Path(__file__).with_name("two_hosts_defs.py")
PUBLIC_URL = "https://qpipe.test/api/qstash"  # both replicas sit behind one public URL
CONCEPTS = [f"burst concept {i}" for i in range(8)]
MESSAGES = 24  # three per concept


def _wait_ready(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} did not answer /health within {timeout:.0f} s")


def _runs_by_message(home: Path) -> dict[str, int]:
    from dagster import DagsterInstance
    from dagster._core.storage.dagster_run import RunsFilter

    counts: dict[str, int] = {}
    with DagsterInstance.from_config(str(home)) as instance:
        for run in instance.get_runs(filters=RunsFilter(job_name="concept_pipeline")):
            mid = run.tags.get("qpipe/message_id")
            if mid:
                counts[mid] = counts.get(mid, 0) + 1
    return counts


def _has_ticked(home: Path) -> bool:
    from dagster import DagsterInstance
    from dagster._core.scheduler.instigation import InstigatorType

    with DagsterInstance.from_config(str(home)) as instance:
        return any(
            instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
            for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        )


@pytest.mark.slow
def test_burst_through_two_receivers_and_two_sensors_runs_each_message_once(
    postgres_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "QPIPE_INBOX_URL": postgres_url,
        "QPIPE_CONCEPTS_URL": postgres_url,
        "QSTASH_CURRENT_SIGNING_KEY": CURRENT,
        "QSTASH_NEXT_SIGNING_KEY": NEXT,
        "QPIPE_RECEIVER_URL": PUBLIC_URL,
        "QPIPE_RECEIVER_RATE_LIMIT": "10000",
        "MAX_CONCEPTS_PER_DAY": "50",
        "PYTHONPATH": str(REPO),
    }
    env.pop("QPIPE_DEPLOY", None)
    procs: list[subprocess.Popen] = []

    def start(cmd: list[str], home: Path) -> subprocess.Popen:
        home.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**env, "DAGSTER_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        return proc

    try:
        ports = [free_port(), free_port()]
        for i, port in enumerate(ports):
            proc = start(
                [sys.executable, "-m", "uvicorn", "webhook_sensor.app:app", "--host",
                 "127.0.0.1", "--port", str(port), "--no-access-log"],
                tmp_path / f"receiver-{i}",
            )  # fmt: skip
            _wait_ready(port, proc, f"receiver {i}")

        homes = [tmp_path / "deployment-a", tmp_path / "deployment-b"]
        for home in homes:
            home.mkdir()
            (home / "dagster.yaml").write_text(
                "run_coordinator:\n  module: dagster.core.run_coordinator\n"
                "  class: QueuedRunCoordinator\n  config:\n    max_concurrent_runs: 0\n"
                "telemetry:\n  enabled: false\n"
            )
            (home / "workspace.yaml").write_text(
                f"load_from:\n  - python_file:\n      relative_path: {DEFS}\n"
                f"      working_directory: {REPO}\n      location_name: two_hosts\n"
            )
            _runs_by_message(home)  # creates the instance's storage before two processes race to
            daemon = str(Path(sys.executable).with_name("dagster-daemon"))
            start([daemon, "run", "-w", str(home / "workspace.yaml")], home)

        deadline = time.monotonic() + 180  # both sensors evaluating before the burst arrives
        while not all(_has_ticked(h) for h in homes):
            assert time.monotonic() < deadline, "a daemon's sensor never ticked within 180 s"
            assert all(p.poll() is None for p in procs), "a receiver or daemon exited"
            time.sleep(1)

        # the burst: every message to both replicas at once
        def deliver(n: int) -> list[int]:
            body = json.dumps(
                {"concept": CONCEPTS[n % len(CONCEPTS)], "urls": [f"https://example.com/{n}"]}
            ).encode()
            mid = f"msg_burst_{n:03d}_{uuid.uuid4().hex[:6]}"
            headers = {
                "Content-Type": "application/json",
                "Upstash-Message-Id": mid,
                "Upstash-Signature": make_token(CURRENT, PUBLIC_URL, body),
            }
            with httpx.Client(timeout=30) as client:
                return [
                    client.post(
                        f"http://127.0.0.1:{p}/api/qstash", content=body, headers=headers
                    ).status_code
                    for p in ports
                ]

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(deliver, range(MESSAGES)))
        assert all(a == [200, 200] for a in answers), answers

        from webhook_sensor.inbox import open_inbox

        inbox = open_inbox(postgres_url)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            runs = [_runs_by_message(h) for h in homes]
            total = sum(sum(r.values()) for r in runs)
            if not inbox.pending(MESSAGES + 1, exclude=()) and total >= MESSAGES:
                break
            time.sleep(2)
        time.sleep(5)  # a late duplicate from a daemon that was mid-tick would show up here
        runs = [_runs_by_message(h) for h in homes]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs = [proc.stdout.read()[-3000:] if proc.stdout else "" for proc in procs]

    merged: dict[str, int] = {}
    for counts in runs:
        for mid, n in counts.items():
            merged[mid] = merged.get(mid, 0) + n
    assert len(merged) == MESSAGES, f"messages without a run: {MESSAGES - len(merged)}"
    assert {mid: n for mid, n in merged.items() if n != 1} == {}, "a message ran twice"
    assert all(runs), f"one deployment did all the work (logs: {logs[2:]})"
    from webhook_sensor.claims import holders

    owners = set(holders(postgres_url, merged).values())
    assert len(owners) == 2, owners  # each message claimed by the deployment that ran it

    import psycopg2

    conn = psycopg2.connect(postgres_url)  # the registry's table, read as any host would
    with conn, conn.cursor() as cur:
        cur.execute("SELECT slug FROM qpipe_concepts")
        stored = {row[0] for row in cur.fetchall()}
    conn.close()
    assert {c.replace(" ", "-") for c in CONCEPTS} <= stored


def test_claims_split_ids_between_racing_owners_and_expire(postgres_url: str, tmp_path) -> None:
    """The claim itself, without daemons: 8 processes race for one set of ids, each id is won
    once; a holder renews its own claim; an expired claim (lease run out on the database clock)
    goes to the next claimer; a SQLite inbox has no claims to take."""
    import psycopg2

    from webhook_sensor.claims import claim, holders

    ids = [f"m{i:03d}" for i in range(200)]
    code = (
        "import sys, json; from webhook_sensor.claims import claim; "
        "print(json.dumps(sorted(claim(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], "
        "limit=200))))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, postgres_url, json.dumps(ids), f"owner-{n}"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    won = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert sorted(i for w in won for i in w) == ids  # every id once, none twice
    assert holders(postgres_url, ids) == {i: f"owner-{n}" for n, w in enumerate(won) for i in w}

    owner = next(f"owner-{n}" for n, w in enumerate(won) if w)
    mine = next(w for w in won if w)
    assert claim(postgres_url, mine, owner, limit=len(mine)) == set(mine)  # renewed
    assert claim(postgres_url, mine, "intruder", limit=len(mine)) == set()
    # offered more than it may take, a claimer skips what others hold
    assert claim(postgres_url, [*mine, "fresh-1", "fresh-2"], "intruder", limit=1) == {"fresh-1"}
    conn = psycopg2.connect(postgres_url)
    with conn, conn.cursor() as cur:  # the lease runs out (database clock, not this host's)
        cur.execute(
            "UPDATE qpipe_inbox_claims SET claimed_until = now() - interval '1 second' "
            "WHERE message_id = %s",
            (mine[0],),
        )
    conn.close()
    assert claim(postgres_url, mine, "intruder", limit=len(mine)) == {mine[0]}
    assert claim(tmp_path / "inbox.sqlite", ["a", "b", "c"], "x", limit=2) == {"a", "b"}
