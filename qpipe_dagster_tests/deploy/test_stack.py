"""The production Docker Compose stack, end to end (make test-deploy).

The tests run in file order on one stack: edge, delivery -> run -> search, doctor, restart with
volumes kept, faults, backup and restore. Each later test relies on the state the earlier ones
left, as an operator's host would.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import httpx
import pytest

from qpipe_dagster_tests.deploy import stack as st
from qpipe_dagster_tests.deploy.stack import Stack, StackError

CONCEPT = "Deploy test halving"
KEY = "deploy-test-halving"
SEEDS = ["http://demo-site:8000/index.html"]
QUERY = "when does the block reward halve"

pytestmark = pytest.mark.timeout(3000)  # includes building images on a cold cache


def test_image_holds_no_ca_bundle_and_runs_as_uid_10001(stack: Stack) -> None:
    out = st.run([stack.docker, "run", "--rm", "--entrypoint", "sh", st.PROJECT_IMAGE, "-c",
                  "id -u; ls /run/secrets 2>/dev/null | wc -l; pip config list | grep -c cert;"
                  " stat -c %u /opt/dagster/home /opt/dagster/state /opt/dagster/backups"])  # fmt: skip
    uid, secrets_, pip_cert, *owners = out.stdout.split()
    assert uid == "10001"
    assert secrets_ == "0" and pip_cert == "0", "the build's CA secret leaked into the image"
    assert owners == ["10001"] * 3
    history = st.run([stack.docker, "history", "--no-trunc", st.PROJECT_IMAGE]).stdout
    assert "BEGIN CERTIFICATE" not in history and "pip_ca," not in history.replace("id=pip_ca", "")


def test_caddy_is_the_only_published_service(stack: Stack) -> None:
    for service in st.ALL_SERVICES:
        ports = st.run([stack.docker, "port", stack.container(service)]).stdout.split()
        published = [p for p in ports if ":" in p]
        if service == "caddy":
            assert all(p.startswith("127.0.0.1:") for p in published), ports
        else:
            assert published == [], f"{service} publishes {ports}: only caddy may"
    with socket.socket() as s:  # the receiver's own port is not on the host
        assert s.connect_ex(("127.0.0.1", 8766)) != 0 or "8766" in str(stack.https_port)


def test_ui_needs_credentials_and_plain_http_only_redirects(stack: Stack) -> None:
    with stack.https() as client:
        assert stack.request(client, "GET", "/server_info").status_code == 401
        ok = stack.request(client, "GET", "/server_info", auth=(stack.ui_user, stack.ui_password))
        assert ok.status_code == 200, ok.text[:300]
        # the receiver's readiness/metrics stay private: behind the UI login, not the receiver
        assert stack.request(client, "GET", "/metrics").status_code == 401
    plain = httpx.post(f"http://127.0.0.1:{stack.http_port}{st.RECEIVER_PATH}",
                       headers={"Host": st.PUBLIC_HOST}, content=b"{}", timeout=10)  # fmt: skip
    assert plain.status_code in (301, 302, 307, 308), plain.status_code
    assert plain.headers["location"].startswith(f"https://{st.PUBLIC_HOST}")


def test_signed_delivery_over_https_runs_and_search_finds_pages(stack: Stack) -> None:
    with stack.https() as client:
        unsigned = stack.request(client, "POST", st.RECEIVER_PATH, content=b"{}")
        assert unsigned.status_code == 401, unsigned.text
        resp = stack.deliver(client, {"concept": CONCEPT, "urls": SEEDS})
    assert resp.status_code == 200, resp.text
    st.log(f"delivery accepted: {resp.text.strip()}; waiting for the sensor's run")
    run = stack.wait_run(KEY, timeout=1500)  # the first run also compiles the numba kernels
    assert run["status"] == "SUCCESS", stack.run_failure(run["id"])
    assert run["tags"].get("dagster/sensor_name"), run["tags"]
    # the GPU router ran it in its own container (device requests off: no NVIDIA runtime here)
    assert run["tags"].get("qpipe/launcher") == "docker-gpu", run["tags"]
    network = stack.env_value("QPIPE_STACK")
    own = st.run([stack.docker, "ps", "-a", "--no-trunc", "--filter", f"network={network}", "--format",
                  "{{.Image}} {{.Command}}"]).stdout  # fmt: skip
    assert "execute_run" in own, f"no run container on {network}:\n{own}"
    out = stack.exec("code", "qpipe", "search", QUERY, "--concept", KEY, "--json")
    hits = json.loads(out.stdout)
    assert hits, f"qpipe search found nothing for {QUERY!r}: {out.stdout}{out.stderr}"
    assert any("demo-site:8000" in json.dumps(h) for h in hits), hits


GPU_PROBE = """
import json, os, docker
from qpipe_dagster.launcher.gpu_router import DEFAULT_DEVICE_REQUEST, docker_failure_message
client = docker.from_env()
request = docker.types.DeviceRequest(**DEFAULT_DEVICE_REQUEST)
ctr = None
try:
    ctr = client.containers.create(os.environ["QPIPE_GPU_IMAGE"], "true", device_requests=[request],
                                   network=os.environ["QPIPE_DOCKER_NETWORK"])
    ctr.start()
    msg = "started"
except docker.errors.APIError as exc:
    msg = docker_failure_message("probe", exc, devices=True)
finally:
    if ctr is not None:
        ctr.remove(force=True)
print(json.dumps(msg))
"""


def test_gpu_device_requests_on_name_the_missing_nvidia_runtime(stack: Stack) -> None:
    """What QPIPE_GPU_DEVICE_REQUESTS=on does on this host: the daemon (uid 10001, through the
    mounted Docker socket) asks for all NVIDIA GPUs as the router does, and the refusal is named."""
    msg = stack.python("daemon", GPU_PROBE)
    if msg == "started":
        pytest.skip("this host has an NVIDIA runtime: device requests work here")
    assert "has no NVIDIA runtime" in str(msg) and "QPIPE_GPU_DEVICE_REQUESTS=off" in str(msg), msg


def test_doctor_passes_in_every_qpipe_container(stack: Stack) -> None:
    failures = []
    for service in st.QPIPE_SERVICES:
        out = stack.exec(service, "qpipe", "doctor", check=False, timeout=240)
        if out.returncode != 0:
            failures.append(f"--- {service} (exit {out.returncode}):\n{out.stdout}{out.stderr}")
    assert not failures, "\n".join(failures)


def _require(stack: Stack, cond: bool, what: str) -> None:
    if not cond:
        raise StackError(f"{what}\n{stack.logs('code', 'daemon', 'receiver')}")


SNAPSHOT = """
import json, os, sqlite3
from pathlib import Path
from dagster import DagsterInstance
i = DagsterInstance.get()
home = Path(os.environ["DAGSTER_HOME"])
assets = Path(os.environ.get("QPIPE_ASSET_DIR") or home / "qpipe" / "assets")
vectors = Path(os.environ["QPIPE_LANCE_PATH"])
db = sqlite3.connect("file:" + os.environ["QPIPE_INBOX_PATH"] + "?mode=ro", uri=True)
cursors = {}
for s in i.all_instigator_state():
    data = s.instigator_data
    cursors[s.name] = [s.status.value, getattr(data, "cursor", None)]
print(json.dumps({
    "inbox": dict(db.execute("select message_id, status from messages").fetchall()),
    "assets": sorted(str(p.relative_to(assets)) for p in assets.rglob("*") if p.is_file()),
    "vector_files": sum(1 for p in vectors.rglob("*") if p.is_file()),
    "runs": {r.run_id: r.status.value for r in i.get_runs(limit=500)},
    "cursors": cursors,
}))
"""


def snapshot(stack: Stack) -> dict:
    """Everything that must survive a recreate, read inside the stack as an operator would."""
    state = stack.python("code", SNAPSHOT)
    assert isinstance(state, dict)
    state["concepts"] = stack.exec("code", "qpipe", "concepts", "list").stdout
    state["model"] = stack.exec("code", "qpipe", "models").stdout
    hits = json.loads(
        stack.exec("code", "qpipe", "search", QUERY, "--concept", KEY, "--json").stdout
    )
    state["search"] = sorted({h.get("url") or json.dumps(h, sort_keys=True) for h in hits})
    return state


def test_state_survives_down_and_up_with_volumes_kept(stack: Stack) -> None:
    before = snapshot(stack)
    assert KEY in before["concepts"] and before["assets"] and before["vector_files"]
    assert before["inbox"] and before["runs"] and before["search"]
    assert "qstash_inbox_sensor" in before["cursors"], before["cursors"]
    stack.compose("down", "-t", "20", timeout=300)
    stack.compose("up", "-d", timeout=600)
    st.log(f"recreated: healthy again in {stack.wait_healthy():.0f}s")
    stack.fetch_ca()
    after = snapshot(stack)
    for part in ("concepts", "model", "assets", "vector_files", "search", "inbox"):
        assert after[part] == before[part], f"{part} changed across down/up"
    assert before["runs"].items() <= after["runs"].items(), "run history lost"
    sensor = "qstash_inbox_sensor"
    assert after["cursors"][sensor][0] == before["cursors"][sensor][0]
    if before["cursors"][sensor][1] is not None:  # the cursor only moves forward
        assert after["cursors"][sensor][1] is not None, "sensor cursor lost"


def _deliver(stack: Stack, payload: dict, message_id: str | None = None) -> str:
    """One signed delivery through Caddy that the receiver accepts; returns its message id."""
    mid = message_id or f"msg_deploy_{uuid.uuid4().hex}"
    with stack.https() as client:
        resp = stack.deliver(client, payload, mid)
    assert resp.status_code == 200, f"delivery {mid} refused: {resp.status_code} {resp.text}"
    return mid


def _wait_started(stack: Stack, known: set[str], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in stack.runs() if r["id"] not in known
                and r["tags"].get("dagster/partition") == KEY]  # fmt: skip
        if runs and runs[0]["status"] == "STARTED":
            return runs[0]
        if runs and runs[0]["status"] in ("SUCCESS", "FAILURE"):
            raise StackError(f"run {runs[0]['id']} ended ({runs[0]['status']}) before the fault")
        time.sleep(2)
    raise StackError(f"no new run of {KEY} started in {timeout:.0f}s\n{stack.logs('daemon')}")


def test_fault_receiver_killed_under_a_stream_of_deliveries(stack: Stack) -> None:
    """Every delivery the receiver answered 200 is in the inbox after it restarts; the others
    got an error (QStash would redeliver them). New concepts past MAX_CONCEPTS_PER_DAY (1 in
    this test's .env) stay pending, so the stream starts no runs."""
    accepted: list[str] = []
    refused = 0
    killer = threading.Timer(1.0, lambda: stack.crash("receiver"))
    with stack.https() as client:
        killer.start()
        deadline = time.monotonic() + 6
        n = 0
        while time.monotonic() < deadline:
            n += 1
            mid = f"msg_deploy_stream_{uuid.uuid4().hex}"
            try:
                resp = stack.deliver(client, {"concept": f"stream concept {n}", "urls": SEEDS}, mid)
            except httpx.HTTPError:
                refused += 1
                continue
            if resp.status_code == 200:
                accepted.append(mid)
            else:
                refused += 1
    killer.join()
    st.log(
        f"fault: receiver killed under {n} deliveries: {len(accepted)} accepted, {refused} refused"
    )
    assert accepted and refused, "the kill did not land inside the stream"
    stack.wait_healthy(["receiver", "caddy"], timeout=180)
    inbox = stack.python("code", SNAPSHOT)["inbox"]  # type: ignore[index]
    lost = [m for m in accepted if m not in inbox]
    assert not lost, f"{len(lost)} accepted deliveries are not in the inbox: {lost[:5]}"
    late = _deliver(stack, {"concept": "stream concept after restart", "urls": SEEDS})
    assert late in stack.python("code", SNAPSHOT)["inbox"]  # type: ignore[index]


def test_fault_code_daemon_and_postgres_during_a_run(stack: Stack) -> None:
    """During a run: SIGKILL of the code container's process, then of the daemon's, then a PostgreSQL
    restart. Every container comes back by itself (restart: unless-stopped); the run (in its
    own container, from the GPU router) either finishes or fails visibly and is re-run by
    run_retries, ending in SUCCESS with no hand edits. The outcome is logged for the runbook."""
    known = {r["id"] for r in stack.runs()}
    _deliver(stack, {"concept": CONCEPT, "urls": SEEDS})
    run = _wait_started(stack, known)
    time.sleep(5)  # inside a step, not at the run's very start
    stack.crash("code")
    stack.crash("daemon")
    st.run([stack.docker, "restart", "-t", "10", stack.container("postgres")])
    st.log(f"fault: killed code and daemon, restarted PostgreSQL during run {run['id']}")
    st.log(f"recovered: every service healthy again in {stack.wait_healthy(timeout=420):.0f}s")

    def family() -> dict[str, str]:
        return {r["id"]: r["status"] for r in stack.runs()
                if r["id"] == run["id"] or r["tags"].get("dagster/root_run_id") == run["id"]}  # fmt: skip

    deadline = time.monotonic() + 1500
    outcome = family()
    while time.monotonic() < deadline and "SUCCESS" not in outcome.values():
        if all(v in ("FAILURE", "CANCELED") for v in outcome.values()) and len(outcome) > 2:
            break  # the original and both retries failed
        time.sleep(15)
        outcome = family()
    st.log(f"fault outcome: the interrupted run and its retries: {outcome}")
    if "SUCCESS" not in outcome.values():
        raise StackError(
            f"run {run['id']} never reached SUCCESS after the faults: {outcome}\n"
            f"{stack.run_failure(run['id'])}\n{stack.logs('daemon', tail=80)}"
        )


def test_backup_and_dry_run_then_restore_into_a_fresh_stack(
    stack: Stack, projects: list[Stack], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The runbook's procedure: `qpipe backup` and `qpipe backups`, then on a new host (a new
    compose project: empty volumes, same .env) `qpipe restore ID --dry-run` and `qpipe restore
    ID` before the first start. (--dry-run also checks that the stores are empty, so it refuses
    on the live host.)"""
    before = snapshot(stack)
    started = time.monotonic()
    out = stack.exec("code", "qpipe", "backup", timeout=600)
    backup_s = time.monotonic() - started
    backup_id = out.stdout.strip().splitlines()[-1].split()[-1]
    st.log(f"backup {backup_id}: {out.stdout.strip()[-300:]}")
    listed = stack.exec("code", "qpipe", "backups").stdout
    assert backup_id in listed, f"backup {backup_id} is not listed as complete:\n{listed}"
    # the backup leaves this host as an operator would copy it (or it is in BACKUP_URL's bucket)
    carried = tmp_path_factory.mktemp("carried")
    tar = carried / f"{backup_id}.tar"  # a tar stream keeps the files' owner (uid 10001)
    src = f"{stack.container('code')}:/opt/dagster/backups/{backup_id}"
    st.run(["sh", "-c", f'"{stack.docker}" cp "{src}" - > "{tar}"'])
    stack.compose("down", "-t", "20", timeout=300)  # the old host is gone (volumes kept)

    name = stack.project + "restore"
    env_file = carried / "stack.env"
    env_file.write_text(
        stack.env_file.read_text()
        .replace(f"QPIPE_STACK={stack.project}\n", f"QPIPE_STACK={name}\n")
        .replace(f"QPIPE_ENV_FILE={stack.env_file}\n", f"QPIPE_ENV_FILE={env_file}\n")
    )
    fresh = Stack(**{**stack.__dict__, "project": name, "env_file": env_file, "ca_file": None})
    projects.append(fresh)
    recovery_started = time.monotonic()  # the new host's work: RTO, less copying the image
    fresh.compose("up", "--no-start", timeout=300)
    dest = f"{fresh.container('code')}:/opt/dagster/backups/"
    st.run(["sh", "-c", f'"{fresh.docker}" cp - "{dest}" < "{tar}"'])
    fresh.compose("up", "-d", "postgres", timeout=300)
    fresh.wait_healthy(["postgres"], timeout=120)
    # --dry-run checks the backup and that every store is empty, writing nothing
    dry = fresh.compose("run", "--rm", "--no-deps", "code", "qpipe", "restore", backup_id,
                        "--dry-run", timeout=600, check=False)  # fmt: skip
    assert dry.returncode == 0, f"restore --dry-run failed:\n{dry.stdout}{dry.stderr}"
    started = time.monotonic()
    restored = fresh.compose("run", "--rm", "--no-deps", "code", "qpipe", "restore", backup_id,
                             timeout=600, check=False)  # fmt: skip
    restore_s = time.monotonic() - started
    assert restored.returncode == 0, f"restore failed:\n{restored.stdout}{restored.stderr}"
    fresh.compose("up", "-d", timeout=600)
    healthy_s = fresh.wait_healthy()
    st.log(f"restored stack healthy in {healthy_s:.0f}s")
    # one greppable line for docs/runbook.md's recovery objectives (bench/RESULTS.md)
    timings = {
        "backup_s": round(backup_s, 1),
        "restore_s": round(restore_s, 1),
        "start_to_healthy_s": round(healthy_s, 1),
        "recovery_total_s": round(time.monotonic() - recovery_started, 1),
    }
    st.log(f"recovery-timings: {json.dumps(timings, sort_keys=True)}")
    fresh.fetch_ca()
    after = snapshot(fresh)
    for part in ("concepts", "model", "assets", "search", "inbox"):
        assert after[part] == before[part], f"{part} differs after restore into a fresh stack"
    assert before["runs"].items() <= after["runs"].items(), "run history not restored (pg_dump)"
