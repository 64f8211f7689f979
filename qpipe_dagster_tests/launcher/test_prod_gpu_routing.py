"""GPU routing in production: deploy/dagster.prod.yaml uses qpipe's GPU router with dagster-docker.

Docker does not run here (the stack test runs it): this checks what can be checked without an
engine, on the real instance file against a throwaway PostgreSQL: the router loads with its
docker section; the container it would create (image, compose network, the services' volumes,
the same env, device requests on or off by QPIPE_GPU_DEVICE_REQUESTS) in docker-py's own form; a
backtest run is routed to Docker; and a Docker refusal for want of the NVIDIA runtime is named.
"""

from __future__ import annotations

from pathlib import Path

import docker
import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.errors import DagsterLaunchFailedError
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import PythonFileTarget

from qpipe_dagster.launcher.gpu_router import (
    DEVICES_ENV,
    DOCKER_GPU,
    LAUNCHER_TAG,
    GpuRoutingRunLauncher,
    docker_failure_message,
)
from qpipe_dagster_tests.launcher.test_gpu_router import DEFS_FILE, REPO_ROOT, make_run
from qpipe_dagster_tests.ops.prod_instance import use_prod_instance
from qpipe_dagster_tests.postgres_cluster import (  # noqa: F401  (fixtures)
    Cluster,
    postgres_cluster,
)

VOLUMES = "qpipe_qpipe-home:/opt/dagster/home,qpipe_qpipe-state:/opt/dagster/state"


@pytest.fixture
def prod_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_cluster: Cluster) -> None:  # noqa: F811
    use_prod_instance(monkeypatch, tmp_path, postgres_cluster)
    monkeypatch.delenv("QPIPE_GPU_LAUNCHER", raising=False)
    monkeypatch.setenv("QPIPE_GPU_IMAGE", "qpipe:latest")
    monkeypatch.setenv("QPIPE_DOCKER_NETWORK", "qpipe_qpipe")
    monkeypatch.setenv("QPIPE_DOCKER_VOLUMES", VOLUMES)
    monkeypatch.setenv("QPIPE_CRAWL_PRIVATE_ADDRESSES", "refuse")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # no engine here


def test_prod_router_builds_the_gpu_container_from_the_environment(
    prod_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with DagsterInstance.get() as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, GpuRoutingRunLauncher) and launcher.docker_enabled
        cfg = launcher.docker_launcher_config()
        assert cfg["image"] == "qpipe:latest" and cfg["network"] == "qpipe_qpipe"
        for name in ("DAGSTER_HOME", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_PASSWORD",
                     "QPIPE_DEPLOY", "QPIPE_CRAWL_PRIVATE_ADDRESSES"):  # fmt: skip
            assert name in cfg["env_vars"], name
        assert "PATH" not in cfg["env_vars"] and "HOME" not in cfg["env_vars"]
        kwargs = cfg["container_kwargs"]
        assert kwargs["volumes"] == VOLUMES.split(",") and kwargs["shm_size"] == "2g"
        assert kwargs["device_requests"] == [
            {"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}
        ]
        host = docker.types.HostConfig(version="1.44", **{
            k: v for k, v in kwargs.items() if k in ("device_requests", "shm_size")
        })  # fmt: skip
        assert host["DeviceRequests"][0]["Driver"] == "nvidia"
        from dagster_docker import DockerRunLauncher

        built = launcher.docker_launcher
        assert isinstance(built, DockerRunLauncher)
        assert built.networks == ["qpipe_qpipe"] and built.image == "qpipe:latest"
    monkeypatch.setenv(DEVICES_ENV, "off")  # the documented switch: hosts without NVIDIA runtime
    with DagsterInstance.get() as instance:
        kwargs = instance.run_launcher.docker_launcher_config()["container_kwargs"]
        assert "device_requests" not in kwargs and kwargs["volumes"] == VOLUMES.split(",")
    monkeypatch.setenv(DEVICES_ENV, "maybe")
    with pytest.raises(Exception, match=rf"{DEVICES_ENV}='maybe' must be 'on'"):
        DagsterInstance.get().run_launcher  # noqa: B018 - loading it is the check


def test_prod_backtest_run_is_routed_to_its_own_container(prod_env: None) -> None:
    with DagsterInstance.get() as instance:
        target = PythonFileTarget(
            python_file=str(DEFS_FILE),
            attribute="defs",
            working_directory=str(REPO_ROOT),
            location_name="launcher_test",
        )
        with WorkspaceProcessContext(instance, target) as ctx:
            workspace = ctx.create_request_context()
            run = make_run(instance, workspace, "all_assets", ["gpu_asset"])
            with pytest.raises(DagsterLaunchFailedError, match="Docker engine is not reachable"):
                instance.launch_run(run.run_id, workspace)
            failed = instance.get_run_by_id(run.run_id)
            assert failed.tags[LAUNCHER_TAG] == DOCKER_GPU
            assert failed.status == DagsterRunStatus.FAILURE


def test_missing_nvidia_runtime_is_named() -> None:
    """What dockerd answers when device requests meet a host without the NVIDIA runtime."""
    refused = docker.errors.APIError(
        "500 Server Error for http+docker://localhost/v1.47/containers/abc/start",
        explanation='could not select device driver "nvidia" with capabilities: [[gpu]]',
    )
    text = docker_failure_message("run-1", refused, devices=True)
    assert "GPU run run-1: the Docker engine has no NVIDIA runtime" in text
    assert f"{DEVICES_ENV}=off" in text and "NVIDIA container toolkit" in text
    unknown = docker.errors.APIError("400", explanation="unknown or invalid runtime name: nvidia")
    assert "no NVIDIA runtime" in docker_failure_message("r", unknown, devices=True)
    other = docker.errors.DockerException("Error while fetching server API version")
    assert "Docker engine is not reachable" in docker_failure_message("r", other, devices=True)
