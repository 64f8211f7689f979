"""Drive the production Docker Compose stack from tests: images, compose, health, deliveries.

Everything talks to the local Docker daemon and to 127.0.0.1 only. Images that cannot be pulled
here are built from Debian packages (mmdebstrap) and cached by name between runs; the project
image is built from the real Dockerfile with build arguments, never a copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
TEST_DIR = REPO / "deploy" / "test"
OVERRIDE = TEST_DIR / "compose.test.yml"
PYTHON_BASE = "qpipe-standin/python-base:bookworm"
SERVICES_BASE = "qpipe-standin/services-base:bookworm"
POSTGRES_IMAGE = "qpipe-standin/postgres:test"
CADDY_IMAGE = "qpipe-standin/caddy:test"
PROJECT_IMAGE = "qpipe:deploy-test"
BASE_PACKAGES = {
    PYTHON_BASE: "python3,python3-venv,ca-certificates,passwd,postgresql-client",
    SERVICES_BASE: "postgresql,caddy,ca-certificates,wget",
}
PUBLIC_HOST = "qpipe.test"
TORCH_INDEX_PORT = 47613  # preferred, see wheel_index
RECEIVER_PATH = "/api/qstash"
QPIPE_SERVICES = ("code", "webserver", "daemon", "receiver")
ALL_SERVICES = ("postgres", *QPIPE_SERVICES, "metrics", "caddy", "demo-site")


class StackError(AssertionError):
    """A step of the stack test failed; the message says which and carries the evidence."""


def log(msg: str) -> None:
    """Progress lines go to the terminal at once (pytest -s), with the elapsed time."""
    print(f"[deploy {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(
    cmd: Sequence[str],
    *,
    timeout: float = 300,
    check: bool = True,
    env: dict[str, str] | None = None,
    input: str | None = None,
    cwd: Path = REPO,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with the command, exit status and its output's tail."""
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, env=env, input=input,
            cwd=cwd,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"`{' '.join(cmd)}` did not finish in {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        out = (proc.stdout[-3000:] + "\n" + proc.stderr[-3000:]).strip()
        raise StackError(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{out}")
    return proc


def docker_cli() -> tuple[str | None, str]:
    """The docker client that talks to the running daemon and builds with BuildKit, or why none.

    The Debian client (/usr/bin/docker, 20.10) has BuildKit built in; a newer static client on
    PATH needs the buildx plugin for `docker build`, so it is used only when buildx is there.
    """
    candidates = [os.environ.get("QPIPE_DOCKER", ""), "/usr/bin/docker", shutil.which("docker")]
    reasons = []
    for exe in dict.fromkeys(c for c in candidates if c):
        if not Path(exe).exists():
            continue
        proc = subprocess.run(
            [exe, "version", "--format", "{{.Client.Version}} {{.Server.Version}}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if proc.returncode != 0:
            reasons.append(f"{exe}: {proc.stderr.strip()[:200]}")
            continue
        client = proc.stdout.split()[0]
        if int(client.split(".")[0]) >= 23:
            buildx = subprocess.run([exe, "buildx", "version"], capture_output=True, timeout=30)
            if buildx.returncode != 0:
                reasons.append(f"{exe}: client {client} needs the buildx plugin to build")
                continue
        return exe, ""
    return None, "; ".join(reasons) or "no docker client found"


def compose_cli() -> list[str] | None:
    """`docker-compose` (v1, Debian) or the `docker compose` plugin, whichever is installed."""
    if exe := shutil.which("docker-compose"):
        return [exe]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------- images


def image_exists(docker: str, name: str) -> bool:
    return run([docker, "image", "inspect", name], check=False, timeout=60).returncode == 0


def ensure_base_image(docker: str, name: str) -> None:
    """Build a Debian bookworm base image with mmdebstrap unless it is already cached."""
    if image_exists(docker, name):
        log(f"base image {name}: cached")
        return
    if not shutil.which("mmdebstrap"):
        raise StackError(
            f"{name} is not built and mmdebstrap is missing: apt-get install mmdebstrap"
        )
    log(f"base image {name}: building with mmdebstrap ({BASE_PACKAGES[name]})")
    script = (
        f"set -o pipefail; mmdebstrap --quiet --variant=minbase --include={BASE_PACKAGES[name]}"
        f" bookworm - | {docker} import - {name}"
    )
    run(["bash", "-c", script], timeout=900)


def buildkit_env() -> dict[str, str]:
    return {**os.environ, "DOCKER_BUILDKIT": "1"}


def build_standins(docker: str) -> None:
    for name in BASE_PACKAGES:
        ensure_base_image(docker, name)
    for image, folder in ((POSTGRES_IMAGE, "postgres"), (CADDY_IMAGE, "caddy")):
        log(f"stand-in {image}: building from deploy/test/{folder}")
        run([docker, "build", "-q", "--build-arg", f"BASE_IMAGE={SERVICES_BASE}", "-t", image,
             str(TEST_DIR / folder)], env=buildkit_env(), timeout=600)  # fmt: skip


def pip_ca_bundle() -> Path | None:
    """The CA bundle the host's pip trusts (a TLS-inspecting proxy's CA may be in it)."""
    for key in ("global.cert", ":env:.cert"):
        proc = run([sys.executable, "-m", "pip", "config", "get", key], check=False, timeout=60)
        path = Path(proc.stdout.strip()) if proc.returncode == 0 else None
        if path and path.is_file():
            return path
    return None


def torch_wheel() -> Path | None:
    """A local CPU torch wheel (QPIPE_TORCH_WHEEL_DIR, default /opt/wheels), if there is one."""
    folder = Path(os.environ.get("QPIPE_TORCH_WHEEL_DIR", "/opt/wheels"))
    wheels = sorted(folder.glob("torch-2.13.0+cpu-cp311-*.whl")) if folder.is_dir() else []
    return wheels[-1] if wheels else None


def bridge_gateway(docker: str) -> str:
    """The host's address on the default bridge, which build containers reach."""
    proc = run([docker, "network", "inspect", "bridge", "--format",
                "{{json .IPAM.Config}} {{index .Options \"com.docker.network.bridge.name\"}}"])  # fmt: skip
    config, _, iface = proc.stdout.strip().rpartition(" ")
    gateway = next((c.get("Gateway") for c in json.loads(config) if c.get("Gateway")), None)
    if gateway:
        return gateway
    out = run(["ip", "-4", "-o", "addr", "show", iface or "docker0"]).stdout.split()
    return out[out.index("inet") + 1].split("/")[0]


@contextmanager
def wheel_index(wheel: Path, host: str) -> Iterator[str]:
    """Serve `wheel` as a one-package PEP 503 index on the Docker bridge for the image build."""
    with tempfile.TemporaryDirectory(prefix="qpipe-torch-index-") as tmp:
        pkg = Path(tmp) / "simple" / "torch"
        pkg.mkdir(parents=True)
        try:
            os.link(wheel, pkg / wheel.name)
        except OSError:
            shutil.copyfile(wheel, pkg / wheel.name)

        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

        # A stable URL keeps Docker's layer cache: the index URL is a build argument, and a new
        # port would rebuild every layer after torch. Another port only when that one is taken.
        try:
            server = ThreadingHTTPServer((host, TORCH_INDEX_PORT), partial(Quiet, directory=tmp))
        except OSError:
            server = ThreadingHTTPServer((host, 0), partial(Quiet, directory=tmp))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://{host}:{server.server_address[1]}/simple"
        finally:
            server.shutdown()
            server.server_close()


def build_project_image(docker: str) -> None:
    """`docker build` of the real Dockerfile; base image, torch source and CA are arguments."""
    args = [docker, "build", "-t", PROJECT_IMAGE, "--build-arg", f"BASE_IMAGE={PYTHON_BASE}"]
    ca = pip_ca_bundle()
    if ca:
        args += ["--secret", f"id=pip_ca,src={ca}"]
    wheel = torch_wheel()
    started = time.monotonic()
    if wheel is None:
        log(f"project image {PROJECT_IMAGE}: building (torch from the default index)")
        run([*args, str(REPO)], env=buildkit_env(), timeout=1800)
    else:
        gateway = bridge_gateway(docker)
        with wheel_index(wheel, gateway) as index:
            log(f"project image {PROJECT_IMAGE}: building (torch from {wheel} via {index})")
            run([*args, "--build-arg", f"TORCH_INDEX={index}", "--build-arg",
                 f"TORCH_TRUSTED_HOST={gateway}", str(REPO)], env=buildkit_env(), timeout=1800)  # fmt: skip
    log(f"project image built in {time.monotonic() - started:.0f}s")


# --------------------------------------------------------------------------------- stack


@dataclass
class Stack:
    """One compose project: docker-compose.yml as shipped plus the test override."""

    docker: str
    compose_cmd: list[str]
    project: str
    env_file: Path
    https_port: int
    http_port: int
    signing_key: str
    ui_user: str
    ui_password: str
    ca_file: Path | None = None
    files: list[Path] = field(default_factory=lambda: [REPO / "docker-compose.yml", OVERRIDE])

    @property
    def receiver_url(self) -> str:
        return f"https://{PUBLIC_HOST}{RECEIVER_PATH}"

    def env_value(self, name: str) -> str:
        for line in self.env_file.read_text().splitlines():
            if line.startswith(name + "="):
                return line.split("=", 1)[1]
        raise StackError(f"{name} is not in {self.env_file}")

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QPIPE_", "DAGSTER_"))}
        return {**env, "QPIPE_ENV_FILE": str(self.env_file), "QPIPE_IMAGE": PROJECT_IMAGE}

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        files = [x for f in self.files for x in ("-f", str(f))]
        cmd = [*self.compose_cmd, "--project-directory", str(REPO), "-p", self.project,
               "--env-file", str(self.env_file), *files, *args]  # fmt: skip
        return run(cmd, timeout=timeout, check=check, env=self._env(), input=input)

    def container(self, service: str) -> str:
        cid = self.compose("ps", "-q", service).stdout.strip()
        if not cid:
            raise StackError(f"service {service} has no container in project {self.project}")
        return cid.splitlines()[0]

    def state(self, service: str) -> dict:
        cid = self.compose("ps", "-q", service, check=False).stdout.strip()
        if not cid:
            return {"Status": "absent"}
        out = run([self.docker, "inspect", "--format", "{{json .State}}", cid.splitlines()[0]],
                  check=False)  # fmt: skip
        return json.loads(out.stdout) if out.returncode == 0 else {"Status": "absent"}

    def crash(self, service: str) -> None:
        """SIGKILL the service's main process from the host, as a crash or the OOM killer would.
        (`docker kill` would not do: Docker counts it as a manual stop and its restart policy
        then leaves the container down.)"""
        pid = self.state(service).get("Pid")
        if not pid:
            raise StackError(f"{service} has no running process to kill: {self.state(service)}")
        os.kill(int(pid), 9)

    def health(self, service: str) -> str:
        st = self.state(service)
        return (st.get("Health") or {}).get("Status") or st.get("Status", "absent")

    def logs(self, *services: str, tail: int = 60) -> str:
        out = self.compose("logs", "--no-color", f"--tail={tail}", *services, check=False)
        return (out.stdout + out.stderr)[-12000:]

    def wait_healthy(self, services: Sequence[str] = ALL_SERVICES, timeout: float = 420) -> float:
        """Wait until every service's health check says healthy; the error shows their logs."""
        started = time.monotonic()
        deadline = started + timeout
        status: dict[str, str] = {}
        while time.monotonic() < deadline:
            status = {s: self.health(s) for s in services}
            if all(v == "healthy" for v in status.values()):
                return time.monotonic() - started
            time.sleep(3)
        bad = [s for s, v in status.items() if v != "healthy"]
        raise StackError(
            f"not healthy after {timeout:.0f}s: {status}\n--- logs of {bad}:\n{self.logs(*bad)}"
        )

    def exec(
        self, service: str, *cmd: str, timeout: float = 180, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.compose("exec", "-T", service, *cmd, timeout=timeout, check=check)

    def python(self, service: str, code: str, timeout: float = 180) -> object:
        """Run `code` with the container's Python; it must print one JSON document last."""
        out = self.exec(service, "python", "-c", code, timeout=timeout)
        return json.loads(out.stdout.strip().splitlines()[-1])

    # ------------------------------------------------------------------ edge (Caddy)

    def fetch_ca(self) -> Path:
        """Caddy's internal root certificate, which the test trusts for qpipe.test."""
        path = self.env_file.with_name("caddy-root.crt")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = self.exec(
                "caddy", "cat", "/data/caddy/pki/authorities/local/root.crt", check=False
            )
            if out.returncode == 0 and "BEGIN CERTIFICATE" in out.stdout:
                path.write_text(out.stdout)
                self.ca_file = path
                return path
            time.sleep(2)
        raise StackError(f"Caddy's internal CA root never appeared:\n{self.logs('caddy')}")

    def https(self) -> httpx.Client:
        """A client for https://qpipe.test on the published port, trusting only Caddy's CA."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file or self.fetch_ca()))
        return httpx.Client(
            base_url=f"https://127.0.0.1:{self.https_port}", verify=ctx, timeout=30,
            headers={"Host": PUBLIC_HOST},
        )  # fmt: skip

    def request(self, client: httpx.Client, method: str, path: str, **kw: object) -> httpx.Response:
        return client.request(method, path, extensions={"sni_hostname": PUBLIC_HOST}, **kw)  # type: ignore[arg-type]

    def deliver(
        self, client: httpx.Client, payload: dict, message_id: str | None = None
    ) -> httpx.Response:
        """POST a delivery signed as QStash signs it, through Caddy, to the receiver."""
        from qpipe_dagster.qstash.signing import sign_delivery

        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "Upstash-Signature": sign_delivery(self.signing_key, self.receiver_url, body),
            "Upstash-Message-Id": message_id or f"msg_deploy_{uuid.uuid4().hex}",
            "Upstash-Retried": "0",
        }
        return self.request(client, "POST", RECEIVER_PATH, content=body, headers=headers)

    # ------------------------------------------------------------------ Dagster state

    def sql(self, query: str) -> str:
        """One query against the Dagster database, through psql in the postgres container (cheap
        enough to poll, unlike starting Python with dagster in a qpipe container)."""
        out = self.compose(
            "exec", "-T", "postgres", "sh", "-c",
            'psql -X -q -At -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"',
            input=query,
        )  # fmt: skip
        return out.stdout.strip()

    def runs(self) -> list[dict]:
        """The newest runs: id, status, job and tags, newest first."""
        query = (
            "SELECT coalesce(json_agg(x), '[]') FROM (SELECT r.run_id AS id, r.status,"
            " r.pipeline_name AS job, coalesce((SELECT json_object_agg(t.key, t.value) FROM"
            " run_tags t WHERE t.run_id = r.run_id), '{}') AS tags FROM runs r"
            " ORDER BY r.id DESC LIMIT 200) x;"
        )
        return json.loads(self.sql(query))

    def wait_run(self, partition: str, *, timeout: float = 900, after: Sequence[str] = ()) -> dict:
        """The newest run of `partition` (not in `after`) once it has finished."""
        deadline = time.monotonic() + timeout
        seen: dict | None = None
        while time.monotonic() < deadline:
            try:
                runs = [r for r in self.runs() if r["tags"].get("dagster/partition") == partition
                        and r["id"] not in after]  # fmt: skip
            except StackError:
                runs = []  # postgres may be restarting (fault tests)
            if runs:
                seen = runs[0]
                if seen["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                    return seen
            time.sleep(10)
        raise StackError(
            f"no finished run for partition {partition!r} after {timeout:.0f}s (last: {seen})\n"
            f"{self.logs('daemon', 'code', tail=80)}"
        )

    def run_failure(self, run_id: str) -> str:
        code = (
            "import json\nfrom dagster import DagsterInstance, DagsterEventType\n"
            "i = DagsterInstance.get()\n"
            f"ev = i.all_logs({run_id!r})\n"
            "print(json.dumps([str(e.user_message)[:800] for e in ev if e.is_dagster_event and"
            " e.dagster_event.event_type_value in ('STEP_FAILURE', 'RUN_FAILURE',"
            " 'ASSET_CHECK_EVALUATION')][-6:]))"
        )
        try:
            return "\n".join(self.python("code", code))  # type: ignore[arg-type]
        except StackError as exc:
            return str(exc)


def write_env_file(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)


def substitutions() -> list[str]:
    return list(yaml.safe_load(OVERRIDE.read_text())["x-substitutions"])
