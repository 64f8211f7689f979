"""GPU routing with real Dagster objects: a real instance with the launcher configured, a real
gRPC code location, runs created from real jobs, and local runs that actually execute."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import pytest
from dagster import AssetKey, DagsterRunStatus
from dagster._core.errors import DagsterLaunchFailedError
from dagster._core.launcher import ResumeRunContext, WorkerStatus
from dagster._core.test_utils import instance_for_test, poll_for_finished_run
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import PythonFileTarget

from qpipe_dagster.launcher.gpu_router import (
    DOCKER_GPU,
    LAUNCHER_TAG,
    LOCAL,
    REASON_TAG,
    GpuRoutingRunLauncher,
    RoutingTagError,
    decide_route,
    gpu_container_kwargs,
)
from qpipe_dagster_tests.launcher.gpu_defs import defs

DEFS_FILE = Path(__file__).with_name("gpu_defs.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = {"module": "qpipe_dagster.launcher.gpu_router", "class": "GpuRoutingRunLauncher"}
DOCKER_CFG = {"image": "qpipe/validator:gpu", "container_kwargs": {"shm_size": "1g"}}


@contextmanager
def setup(config: dict | None = None) -> Iterator[tuple]:
    overrides = {"run_launcher": {**LAUNCHER, "config": config or {}}}
    with instance_for_test(overrides=overrides) as instance:
        target = PythonFileTarget(
            python_file=str(DEFS_FILE),
            attribute="defs",
            working_directory=str(REPO_ROOT),
            location_name="launcher_test",
        )
        with WorkspaceProcessContext(instance, target) as ctx:
            yield instance, ctx.create_request_context()


def make_run(instance, workspace, job_name: str, assets: list[str] | None = None, tags=None):
    location = workspace.get_code_location("launcher_test")
    remote_job = location.get_repository("__repository__").get_full_job(job_name)
    return instance.create_run_for_job(
        job_def=defs.resolve_job_def(job_name),
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
        asset_selection={AssetKey(a) for a in assets} if assets else None,
        tags=tags,
    )


@pytest.fixture(scope="module")
def local_env() -> Iterator[tuple]:
    with setup() as env:
        yield env


@pytest.mark.parametrize(
    ("job_name", "assets", "tags", "gpu", "why"),
    [
        ("cpu_only", None, None, False, "no run, step or asset tag"),
        ("all_assets", ["cpu_asset"], None, False, "no run, step or asset tag"),
        ("all_assets", None, None, True, "step gpu_asset has tag qpipe/compute=gpu"),
        ("all_assets", ["gpu_asset"], None, True, "step gpu_asset has tag"),
        ("asset_tag_job", None, None, True, "asset asset_tag_only has tag qpipe/compute=gpu"),
        ("gpu_op_job", None, None, True, "step gpu_op has tag"),
        ("cpu_only", None, {"qpipe/compute": "gpu"}, True, "run tag qpipe/compute=gpu"),
    ],
)
def test_route_from_run_step_and_asset_tags(local_env, job_name, assets, tags, gpu, why) -> None:
    instance, workspace = local_env
    run = make_run(instance, workspace, job_name, assets, tags)
    launcher = instance.run_launcher
    assert isinstance(launcher, GpuRoutingRunLauncher)
    route = launcher.route(run, workspace)
    assert route.gpu is gpu and why in route.reason


def test_without_docker_gpu_runs_launch_locally_and_succeed(local_env) -> None:
    instance, workspace = local_env
    run = make_run(instance, workspace, "all_assets")  # has the GPU asset
    instance.launch_run(run.run_id, workspace)
    done = poll_for_finished_run(instance, run.run_id, timeout=90)
    assert done.status == DagsterRunStatus.SUCCESS
    assert done.tags[LAUNCHER_TAG] == LOCAL
    assert "Docker GPU launching not configured, launched locally" in done.tags[REASON_TAG]
    assert instance.get_latest_materialization_event(AssetKey("gpu_asset")) is not None
    health = instance.run_launcher.check_run_worker_health(done)
    assert health.status == WorkerStatus.RUNNING and "local" in (health.msg or "")
    assert instance.run_launcher.supports_check_run_worker_health is False


def test_container_kwargs_request_gpus_in_docker_py_form() -> None:
    kw = gpu_container_kwargs({"shm_size": "1g"})
    assert kw == {
        "shm_size": "1g",
        "device_requests": [{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}],
    }
    # docker-py turns the dicts into the Engine API's DeviceRequests (no engine needed)
    host = docker.types.HostConfig(version="1.44", device_requests=kw["device_requests"])
    assert host["DeviceRequests"][0]["Driver"] == "nvidia"
    assert host["DeviceRequests"][0]["Count"] == -1
    assert host["DeviceRequests"][0]["Capabilities"] == [["gpu"]]
    mine = [{"driver": "nvidia", "device_ids": ["0"], "capabilities": [["gpu", "utility"]]}]
    assert gpu_container_kwargs(None, mine)["device_requests"] == mine


def test_gpu_run_goes_to_docker_and_names_docker_when_no_engine(monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # no engine here anyway
    monkeypatch.delenv("QPIPE_GPU_LAUNCHER", raising=False)
    with setup({"docker": DOCKER_CFG}) as (instance, workspace):
        launcher = instance.run_launcher
        from dagster_docker import DockerRunLauncher

        assert isinstance(launcher.docker_launcher, DockerRunLauncher)
        assert launcher.docker_launcher.container_kwargs["device_requests"][0]["count"] == -1
        assert launcher.docker_launcher.container_kwargs["shm_size"] == "1g"

        gpu_run = make_run(instance, workspace, "all_assets", ["gpu_asset"])
        with pytest.raises(DagsterLaunchFailedError, match="Docker engine is not reachable"):
            instance.launch_run(gpu_run.run_id, workspace)
        failed = instance.get_run_by_id(gpu_run.run_id)
        assert failed.tags[LAUNCHER_TAG] == DOCKER_GPU and failed.status == DagsterRunStatus.FAILURE

        # health / resume follow the recorded tag to the Docker launcher
        health = launcher.check_run_worker_health(failed)
        assert health.status == WorkerStatus.NOT_FOUND and "container" in (health.msg or "")
        with pytest.raises(DagsterLaunchFailedError, match="Docker"):
            launcher.resume_run(ResumeRunContext(dagster_run=failed, workspace=workspace))
        assert launcher.terminate(failed.run_id) is False  # finished: nothing to stop

        # a CPU run on the same instance still launches locally and runs
        cpu_run = make_run(instance, workspace, "cpu_only")
        instance.launch_run(cpu_run.run_id, workspace)
        done = poll_for_finished_run(instance, cpu_run.run_id, timeout=90)
        assert done.status == DagsterRunStatus.SUCCESS and done.tags[LAUNCHER_TAG] == LOCAL
        with pytest.raises(NotImplementedError, match="only Docker GPU runs can be resumed"):
            launcher.resume_run(ResumeRunContext(dagster_run=done, workspace=workspace))


def test_env_override_and_bad_config(monkeypatch) -> None:
    monkeypatch.setenv("QPIPE_GPU_LAUNCHER", "local")
    assert GpuRoutingRunLauncher(docker=DOCKER_CFG).docker_enabled is False
    monkeypatch.setenv("QPIPE_GPU_LAUNCHER", "docker")
    assert GpuRoutingRunLauncher(docker=DOCKER_CFG).docker_enabled is True
    with pytest.raises(ValueError, match="no 'docker' section"):
        GpuRoutingRunLauncher()
    monkeypatch.setenv("QPIPE_GPU_LAUNCHER", "kubernetes")
    with pytest.raises(ValueError, match="must be 'docker' or 'local', got 'kubernetes'"):
        GpuRoutingRunLauncher()


def test_shipped_dagster_yaml_uses_the_router_and_limits_gpu_runs(dagster_home: Path) -> None:
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:  # the repo's dagster.yaml, copied by the fixture
        assert isinstance(instance.run_launcher, GpuRoutingRunLauncher)
        assert instance.run_launcher.docker_enabled is False  # local default
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": "qpipe/compute", "value": "gpu", "limit": 1} in limits
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


# -- bad input: routing tags, docker config, runs whose launcher changed ------------------


@pytest.mark.parametrize("value", ["GPU", "gpu ", " Gpu"])
def test_near_miss_gpu_tag_is_refused_naming_it(local_env, value: str) -> None:
    """Old: `qpipe/compute=GPU` ran locally on the CPU, outside the run queue's GPU limit."""
    instance, workspace = local_env
    run = make_run(instance, workspace, "cpu_only", tags={"qpipe/compute": value})
    with pytest.raises(RoutingTagError, match=rf"run {run.run_id} has tag qpipe/compute={value!r}"):
        instance.run_launcher.route(run, workspace)
    with pytest.raises(DagsterLaunchFailedError, match=r"not launched: .*exactly 'gpu'"):
        instance.launch_run(run.run_id, workspace)
    failed = instance.get_run_by_id(run.run_id)
    assert failed.status == DagsterRunStatus.FAILURE
    assert LAUNCHER_TAG not in failed.tags and repr(value) in failed.tags[REASON_TAG]
    # a step tag is checked the same way
    with pytest.raises(RoutingTagError, match=r"step gpu_op has tag qpipe/compute='GPU'"):
        decide_route(
            make_run(instance, workspace, "cpu_only"), [("gpu_op", {"qpipe/compute": "GPU"})], []
        )


@pytest.mark.parametrize("value", ["cpu", "", "gpus"])
def test_other_tag_values_are_not_gpu(local_env, value: str) -> None:
    instance, workspace = local_env
    run = make_run(instance, workspace, "cpu_only", tags={"qpipe/compute": value})
    route = instance.run_launcher.route(run, workspace)
    assert route.gpu is False and "no run, step or asset tag qpipe/compute=gpu" in route.reason


@pytest.mark.parametrize(
    ("docker_cfg", "message"),
    [
        # old: accepted; docker-py ignores unknown keys, so the container got no GPU at all
        ({"device_requests": [{"gpus": 1}]}, r"device_requests\[0\]: unknown key\(s\) gpus"),
        ({"device_requests": [{"driver": "nvidia"}]}, r"requests no device: set count"),
        # old: accepted, then a raw ValueError from docker-py when the container was created
        ({"device_requests": [{"count": "all"}]}, r"count must be -1 \(all GPUs\) or"),
        ({"device_requests": [{"count": -1, "capabilities": "gpu"}]}, "list of lists of strings"),
        ({"device_requests": [{"count": 1, "device_ids": ["0"]}]}, "count or device_ids, not both"),
        (
            {"container_kwargs": {"device_requests": [{"count": "2"}]}},
            r"container_kwargs.device_requests\[0\]: count must be",
        ),
        # old: [] silently meant "all GPUs"
        ({"device_requests": []}, "device_requests must be a non-empty list"),
        (
            {"device_requests": [{"count": 1}], "container_kwargs": {"device_requests": []}},
            "set both at the top and in container_kwargs",
        ),
        # old: accepted; the launch failed with dagster-docker's bare Exception
        ({"image": "Qpipe GPU"}, r"image 'Qpipe GPU' is not a valid image reference"),
    ],
)
def test_bad_docker_config_fails_loading_naming_the_field(docker_cfg: dict, message: str) -> None:
    with pytest.raises(ValueError, match=rf"^run_launcher\.config\.docker\..*{message}"):
        GpuRoutingRunLauncher(docker={"image": "qpipe/validator:gpu", **docker_cfg})


def test_bad_config_in_dagster_yaml_names_the_field(monkeypatch) -> None:
    monkeypatch.delenv("QPIPE_GPU_LAUNCHER", raising=False)
    cfg = {"docker": {"image": "qpipe:gpu", "device_requests": [{"gpus": 1}]}}
    overrides = {"run_launcher": {**LAUNCHER, "config": cfg}}
    bad = r"docker.device_requests\[0\]: unknown key\(s\) gpus"
    with instance_for_test(overrides=overrides) as instance, pytest.raises(ValueError, match=bad):
        instance.run_launcher  # noqa: B018 - loading the launcher is what fails
    for name in ("gpu_tag_key", "gpu_tag_value"):
        with pytest.raises(ValueError, match=rf"config.{name} must be a non-empty tag .*got ' '"):
            GpuRoutingRunLauncher(**{name: " "})


def test_empty_docker_section_enables_docker_and_names_a_missing_image(monkeypatch) -> None:
    """Old: `docker: {}` counted as no docker section: GPU runs silently launched locally (and
    QPIPE_GPU_LAUNCHER=docker said there was no docker section)."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setenv("QPIPE_GPU_LAUNCHER", "docker")
    assert GpuRoutingRunLauncher(docker={}).docker_enabled is True
    monkeypatch.delenv("QPIPE_GPU_LAUNCHER")
    with setup({"docker": {}}) as (instance, workspace):
        assert instance.run_launcher.docker_enabled is True
        run = make_run(instance, workspace, "all_assets", ["gpu_asset"])
        with pytest.raises(
            DagsterLaunchFailedError, match=r"no image to run it in: set run_launcher"
        ):
            instance.launch_run(run.run_id, workspace)
        assert instance.get_run_by_id(run.run_id).tags[LAUNCHER_TAG] == DOCKER_GPU


def test_terminating_a_docker_run_after_docker_was_turned_off_names_the_run(local_env) -> None:
    instance, workspace = local_env
    run = make_run(instance, workspace, "cpu_only", tags={LAUNCHER_TAG: DOCKER_GPU})
    with pytest.raises(
        DagsterLaunchFailedError, match=rf"run {run.run_id} runs in a Docker GPU .*docker stop"
    ):
        instance.run_launcher.terminate(run.run_id)
    # a run with no or an unknown launcher tag goes to the local launcher: nothing to stop
    for tags in (None, {LAUNCHER_TAG: "kubernetes"}):
        other = make_run(instance, workspace, "cpu_only", tags=tags)
        assert instance.run_launcher.terminate(other.run_id) is False
