"""The production stack fixture: images built, docker-compose.yml + the test override up, healthy.

Runs only under `make test-deploy` (QPIPE_TEST_DEPLOY=1) and only with a usable Docker daemon;
otherwise every test here is skipped with the reason. The stack is one compose project named
for this run; teardown removes that project's containers, networks and volumes and nothing else.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qpipe_dagster_tests.deploy import stack as st

_started = time.monotonic()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.deploy)


def _skip_reason() -> str | None:
    if os.environ.get("QPIPE_TEST_DEPLOY") != "1":
        return "production stack test: run it with `make test-deploy` (needs Docker)"
    docker, why = st.docker_cli()
    if docker is None:
        return f"no usable Docker daemon/client: {why}"
    if st.compose_cli() is None:
        return "neither docker-compose nor the docker compose plugin is installed"
    return None


def env_values(
    name: str, stack_dir: Path, https_port: int, http_port: int, key: str, ui_hash: str
) -> dict[str, str]:
    """.env.example as shipped, with the values it marks REQUIRED filled in for this test."""
    values: dict[str, str] = {}
    for line in (st.REPO / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#") and "=" in line:
            var, value = line.split("=", 1)
            values[var] = value
    values.update(
        DAGSTER_PG_PASSWORD=secrets.token_hex(12),
        QPIPE_PUBLIC_HOST=st.PUBLIC_HOST,
        QPIPE_TLS="internal",
        QPIPE_UI_USER="ops",
        QPIPE_UI_PASSWORD_HASH=ui_hash,
        QPIPE_PUBLISH_ADDR="127.0.0.1",
        QPIPE_HTTPS_PORT=str(https_port),
        QPIPE_HTTP_PORT=str(http_port),
        QSTASH_CURRENT_SIGNING_KEY=key,
        QSTASH_NEXT_SIGNING_KEY="sig_deploytest_next_" + secrets.token_hex(8),
        QPIPE_RECEIVER_URL=f"https://{st.PUBLIC_HOST}{st.RECEIVER_PATH}",
        QPIPE_IMAGE=st.PROJECT_IMAGE,
        QPIPE_STACK=name,
        # a test setting, not a substitution: the fault test's stream of new concepts stays
        # pending in the inbox instead of starting a run each
        MAX_CONCEPTS_PER_DAY="1",
        QPIPE_GPU_DEVICE_REQUESTS="off",
        DOCKER_GID=str(os.stat("/var/run/docker.sock").st_gid),
        QPIPE_ENV_FILE=str(stack_dir / "stack.env"),
    )
    return values


def new_stack(docker: str, tmp: Path, name: str) -> st.Stack:
    tmp.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    ui_hash = st.run([docker, "run", "--rm", st.CADDY_IMAGE, "caddy", "hash-password",
                      "--plaintext", password]).stdout.strip()  # fmt: skip
    https_port, http_port = st.free_port(), st.free_port()
    key = "sig_deploytest_" + secrets.token_hex(12)
    env_file = tmp / "stack.env"
    st.write_env_file(env_file, env_values(name, tmp, https_port, http_port, key, ui_hash))
    return st.Stack(
        docker=docker, compose_cmd=st.compose_cli() or [], project=name, env_file=env_file,
        https_port=https_port, http_port=http_port, signing_key=key, ui_user="ops",
        ui_password=password,
    )  # fmt: skip


@pytest.fixture(scope="session")
def docker() -> str:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    exe, _ = st.docker_cli()
    assert exe
    return exe


@pytest.fixture(scope="session")
def images(docker: str) -> None:
    st.build_standins(docker)
    st.build_project_image(docker)


@pytest.fixture(scope="session")
def projects() -> Iterator[list[st.Stack]]:
    """Every compose project this session started; removed (with volumes) at the end."""
    started: list[st.Stack] = []
    yield started
    for s in started:
        st.log(f"cleanup: {s.project} (containers, networks, volumes)")
        # run containers the GPU router started on this stack's network are not compose's
        network = s.env_value("QPIPE_STACK")
        ids = st.run([s.docker, "ps", "-aq", "--filter", f"network={network}"], check=False)
        compose_ids = set(s.compose("ps", "-q", check=False).stdout.split())
        extra = [c for c in ids.stdout.split() if c not in compose_ids and len(c) >= 12]
        if extra:
            st.run([s.docker, "rm", "-f", *extra], check=False)
        down = s.compose("down", "-v", "--remove-orphans", "-t", "5", timeout=300, check=False)
        if down.returncode != 0:
            st.log(f"cleanup: `down -v` exited {down.returncode}: {down.stderr[-1000:]}")
        # whatever `down` left of this stack's own names (its volumes and network)
        left = st.run(
            [s.docker, "volume", "ls", "-q", "--filter", f"name=^{network}-"], check=False
        )
        for volume in left.stdout.split():
            st.run([s.docker, "volume", "rm", "-f", volume], check=False)
        st.run([s.docker, "network", "rm", network], check=False)


@pytest.fixture(scope="session")
def stack(
    request: pytest.FixtureRequest, docker: str, images: None, projects: list[st.Stack],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[st.Stack]:  # fmt: skip
    s = new_stack(docker, tmp_path_factory.mktemp("stack"), f"qpipedeploy{os.getpid()}")
    projects.append(s)
    st.log("substitutions (deploy/test/compose.test.yml):")
    for line in st.substitutions():
        st.log(f"  - {line}")
    s.compose("up", "-d", timeout=600)
    took = s.wait_healthy()
    st.log(
        f"stack {s.project} healthy in {took:.0f}s; https://{st.PUBLIC_HOST} on 127.0.0.1:{s.https_port}"
    )
    s.fetch_ca()
    yield s
    if request.session.testsfailed:
        st.log(f"tests failed: state and logs of {s.project}")
        print(s.compose("ps", check=False).stdout)
        print(s.logs(tail=120))
    st.log(f"session took {time.monotonic() - _started:.0f}s")
