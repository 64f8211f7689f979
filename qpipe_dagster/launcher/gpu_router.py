"""A run launcher that sends GPU runs to a Docker GPU container and everything else to the default.

Asset tags do not become run tags in Dagster, so a run that materializes ``backtest_results``
carries no ``qpipe/compute=gpu`` tag of its own. This launcher decides per run from three
sources, first match wins: the run's tags, the step tags of its execution plan snapshot (op
tags), and the tags of the assets it materializes (read from the workspace). It records the
decision as the run tag ``qpipe/launcher`` (``docker-gpu`` or ``local``) plus the reason, and
``terminate`` / ``check_run_worker_health`` / ``resume_run`` follow that tag.

Without a ``docker`` section in the config (the local default), or with
``QPIPE_GPU_LAUNCHER=local``, GPU runs launch locally and the kernels pick GPU or CPU
themselves (``QPIPE_BACKEND``). With a ``kubernetes`` section instead, every run is a Kubernetes
Job: GPU runs in the GPU node pool (``k8s-gpu``), the others in the CPU pool (``k8s-cpu``); see
``qpipe_dagster.launcher.k8s``.

Production (deploy/dagster.prod.yaml) fills the GPU container in from the environment when it
launches, so the instance file stays loadable everywhere: ``QPIPE_GPU_IMAGE`` (default: the code
location's image, ``DAGSTER_CURRENT_IMAGE``), ``QPIPE_DOCKER_NETWORK`` (the compose network),
``QPIPE_DOCKER_VOLUMES`` (``volume:/path,...``, the same volumes as the services), every set
variable whose name starts with one of ``env_prefixes`` (the same env), and
``QPIPE_GPU_DEVICE_REQUESTS`` (``on``, the default: all NVIDIA GPUs; ``off``: no device
request, for hosts without the NVIDIA container runtime). With requests on and no NVIDIA
runtime, the launch fails saying so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import AssetKey, Field, IntSource, Noneable, Permissive, Shape, StringSource
from dagster._core.errors import DagsterLaunchFailedError
from dagster._core.launcher import (
    CheckRunHealthResult,
    DefaultRunLauncher,
    LaunchRunContext,
    ResumeRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from qpipe_dagster.launcher.k8s import K8S_TARGETS
from qpipe_dagster.launcher.warm.launcher import WarmRunLauncher
from qpipe_dagster.settings import env_value, warm_workers_allowed

GPU_TAG_KEY = "qpipe/compute"
GPU_TAG_VALUE = "gpu"
LAUNCHER_TAG = "qpipe/launcher"
REASON_TAG = "qpipe/launcher_reason"
DOCKER_GPU = "docker-gpu"
LOCAL = "local"
ENV_VAR = "QPIPE_GPU_LAUNCHER"
DEVICES_ENV = "QPIPE_GPU_DEVICE_REQUESTS"  # on (default) | off: hosts without the NVIDIA runtime
IMAGE_ENV = "QPIPE_GPU_IMAGE"
NETWORK_ENV = "QPIPE_DOCKER_NETWORK"
VOLUMES_ENV = "QPIPE_DOCKER_VOLUMES"
# docker-py accepts dicts for DeviceRequest; Count -1 = all GPUs, AND-capabilities [["gpu"]]
DEFAULT_DEVICE_REQUEST: dict[str, Any] = {
    "driver": "nvidia",
    "count": -1,
    "capabilities": [["gpu"]],
}


@dataclass(frozen=True)
class Route:
    """Where a run goes and why (the why is stored on the run for the UI)."""

    gpu: bool
    reason: str


class RoutingTagError(ValueError):
    """A routing tag holds a near miss of the GPU value (``GPU``, ``gpu ``); the message names it."""


def _is_gpu(tags: Mapping[str, str] | None, key: str, value: str, where: str) -> bool:
    """Exactly ``key=value``. A value equal to it up to case and surrounding spaces is refused:
    run silently on the CPU, it would also escape the run queue's GPU limit (an exact match)."""
    got = (tags or {}).get(key)
    if got is None or got == value:
        return got == value
    if got.strip().casefold() == value.casefold():
        raise RoutingTagError(
            f"{where} has tag {key}={got!r}: the GPU value is exactly {value!r} (lower case, no "
            "spaces; the run queue's GPU limit counts only that); fix the tag and launch again"
        )
    return False


def decide_route(
    run: DagsterRun,
    step_tags: Iterable[tuple[str, Mapping[str, str] | None]],
    asset_tags: Iterable[tuple[AssetKey, Mapping[str, str] | None]],
    key: str = GPU_TAG_KEY,
    value: str = GPU_TAG_VALUE,
) -> Route:
    """GPU when the run, one of its steps, or one of its assets carries ``key=value``.

    Raises RoutingTagError for a near miss of ``value`` anywhere (see ``_is_gpu``).
    """
    if _is_gpu(run.tags, key, value, f"run {run.run_id}"):
        return Route(True, f"run tag {key}={value}")
    for step_key, tags in step_tags:
        if _is_gpu(tags, key, value, f"step {step_key}"):
            return Route(True, f"step {step_key} has tag {key}={value}")
    for asset_key, tags in asset_tags:
        if _is_gpu(tags, key, value, f"asset {asset_key.to_user_string()}"):
            return Route(True, f"asset {asset_key.to_user_string()} has tag {key}={value}")
    return Route(False, f"no run, step or asset tag {key}={value}")


_DEVICE_REQUEST_KEYS = {"driver", "count", "device_ids", "capabilities", "options"}


def device_request_problem(req: Any) -> str | None:
    """Why one docker-py DeviceRequest dict would not request a GPU as meant, or None.

    docker-py ignores unknown keys (``{gpus: 1}`` asks for no device at all) and checks types
    only when the container is created, so each request is checked when the launcher loads.
    """
    if not isinstance(req, Mapping):
        return f"must be a mapping like {DEFAULT_DEVICE_REQUEST}, got {req!r}"
    unknown = sorted(set(req) - _DEVICE_REQUEST_KEYS)
    if unknown:
        return f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_DEVICE_REQUEST_KEYS))}"
    driver, count, ids = req.get("driver"), req.get("count"), req.get("device_ids")
    caps, options = req.get("capabilities"), req.get("options")
    if driver is not None and not isinstance(driver, str):
        return f"driver must be a string, got {driver!r}"
    if count is not None and (
        not isinstance(count, int) or isinstance(count, bool) or (count < 1 and count != -1)
    ):
        return f"count must be -1 (all GPUs) or a whole number >= 1, got {count!r}"
    if ids is not None and (
        not isinstance(ids, list) or not all(isinstance(i, str) and i.strip() for i in ids)
    ):
        return f"device_ids must be a list of device id strings, got {ids!r}"
    if caps is not None and (
        not isinstance(caps, list)
        or not all(isinstance(c, list) and all(isinstance(x, str) for x in c) for c in caps)
    ):
        return f"capabilities must be a list of lists of strings (e.g. [[gpu]]), got {caps!r}"
    if options is not None and not isinstance(options, Mapping):
        return f"options must be a mapping, got {options!r}"
    if count is not None and ids:
        return "set count or device_ids, not both"
    if count is None and not ids:
        return "requests no device: set count (-1 for all GPUs) or device_ids"
    return None


def check_docker_config(docker: Mapping[str, Any]) -> None:
    """Refuse a ``docker`` section whose GPU request or image would fail or mislead at launch."""
    where = "run_launcher.config.docker"
    kwargs = docker.get("container_kwargs") or {}
    own = docker.get("device_requests")
    if own is not None and kwargs.get("device_requests") is not None:
        raise ValueError(
            f"{where}.device_requests is set both at the top and in container_kwargs; keep one"
        )
    for name, reqs in (
        ("device_requests", own),
        ("container_kwargs.device_requests", kwargs.get("device_requests")),
    ):
        if reqs is None:
            continue
        if not isinstance(reqs, list) or not reqs:
            raise ValueError(
                f"{where}.{name} must be a non-empty list of device requests (leave it out for "
                f"all NVIDIA GPUs), got {reqs!r}"
            )
        for i, req in enumerate(reqs):
            why = device_request_problem(req)
            if why:
                raise ValueError(f"{where}.{name}[{i}]: {why}")
    image = docker.get("image")
    if image is not None:
        try:
            from dagster_docker.utils import validate_docker_image
        except ImportError:  # named at the first GPU launch (docker_launcher)
            return
        try:
            validate_docker_image(image)
        except Exception:  # dagster-docker raises a bare Exception
            raise ValueError(
                f"{where}.image {image!r} is not a valid image reference (e.g. "
                "ghcr.io/org/qpipe:gpu; lower case, no spaces)"
            ) from None


def gpu_container_kwargs(
    container_kwargs: Mapping[str, Any] | None,
    device_requests: list[dict] | None = None,
    *,
    devices: bool = True,
    volumes: list[str] | None = None,
) -> dict[str, Any]:
    """docker-py ``containers.create`` kwargs with a GPU device request added.

    User-given ``device_requests`` win; otherwise all NVIDIA GPUs are requested. ``devices``
    False (QPIPE_GPU_DEVICE_REQUESTS=off) requests none at all; ``volumes`` are appended.
    """
    kwargs = dict(container_kwargs or {})
    if not devices:
        kwargs.pop("device_requests", None)
    elif not kwargs.get("device_requests"):
        kwargs["device_requests"] = list(device_requests or [dict(DEFAULT_DEVICE_REQUEST)])
    if volumes:
        kwargs["volumes"] = [*(kwargs.get("volumes") or []), *volumes]
    return kwargs


def device_requests_on(env: Mapping[str, str] | None = None) -> bool:
    """QPIPE_GPU_DEVICE_REQUESTS: on (default, blank too) or off; anything else names itself."""
    raw = (env_value(DEVICES_ENV, env) or "").lower()
    if raw not in ("", "on", "off"):
        raise ValueError(
            f"{DEVICES_ENV}={raw!r} must be 'on' (GPU runs request all NVIDIA GPUs) or 'off' "
            "(no device request, for hosts without the NVIDIA container runtime)"
        )
    return raw != "off"


def docker_volumes(env: Mapping[str, str] | None = None) -> list[str]:
    """QPIPE_DOCKER_VOLUMES as docker-py binds: 'volume:/path[:ro]' entries, comma-separated."""
    raw = env_value(VOLUMES_ENV, env) or ""
    out = []
    for item in filter(None, (x.strip() for x in raw.split(","))):
        parts = item.split(":")
        if (
            len(parts) not in (2, 3)
            or not parts[0]
            or not parts[1].startswith("/")
            or (len(parts) == 3 and parts[2] not in ("ro", "rw"))
        ):
            raise ValueError(
                f"{VOLUMES_ENV} entry {item!r} is not 'volume:/absolute/path' (optionally ':ro'), "
                "e.g. qpipe_qpipe-home:/opt/dagster/home,qpipe_qpipe-state:/opt/dagster/state"
            )
        out.append(item)
    return out


_NO_NVIDIA = ('could not select device driver "nvidia"', "unknown or invalid runtime name: nvidia")


def docker_failure_message(run_id: str, exc: BaseException, *, devices: bool) -> str:
    """What a Docker error at launch means for the operator, naming the fix."""
    text = str(getattr(exc, "explanation", None) or exc)
    if devices and any(marker in text for marker in _NO_NVIDIA):
        return (
            f"GPU run {run_id}: the Docker engine has no NVIDIA runtime ({text.strip()}): install "
            "the NVIDIA container toolkit on this host (docs/runbook.md, GPU not detected), or "
            f"set {DEVICES_ENV}=off to run GPU runs in their own containers without GPUs, or "
            f"{ENV_VAR}=local to run them in the code location"
        )
    return (
        f"GPU run {run_id}: the Docker engine is not reachable or refused the container "
        f"({exc}). Start Docker / set DOCKER_HOST, or set {ENV_VAR}=local to run GPU work "
        "locally."
    )


WARM_SCHEMA = {
    "idle_timeout_s": Field(
        IntSource,
        is_required=False,
        default_value=600,
        description="the warm worker exits after this long with no run (its memory comes back)",
    ),
    "start_timeout_s": Field(
        IntSource,
        is_required=False,
        default_value=180,
        description="how long the first run waits for a warm worker to load; then it runs cold",
    ),
}

DOCKER_SCHEMA = {
    "image": Field(StringSource, is_required=False, description="image for GPU runs"),
    "registry": Field(Permissive(), is_required=False),
    "env_vars": Field([str], is_required=False),
    "network": Field(StringSource, is_required=False),
    "networks": Field([StringSource], is_required=False),
    "container_kwargs": Field(Permissive(), is_required=False),
    "device_requests": Field(
        Noneable([Permissive()]),
        is_required=False,
        description="docker-py DeviceRequest dicts; default all NVIDIA GPUs",
    ),
    "env_prefixes": Field(
        [str],
        is_required=False,
        description="pass every set variable whose name starts with one of these (same env)",
    ),
}


class GpuRoutingRunLauncher(RunLauncher, ConfigurableClass):
    """Routes runs tagged (directly, by step or by asset) ``qpipe/compute=gpu`` to Docker GPUs."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        docker: Mapping[str, Any] | None = None,
        gpu_tag_key: str = GPU_TAG_KEY,
        gpu_tag_value: str = GPU_TAG_VALUE,
        kubernetes: Mapping[str, Any] | None = None,
        warm_workers: Mapping[str, Any] | None = None,
    ) -> None:
        self._inst_data = inst_data
        for name, tag in (("gpu_tag_key", gpu_tag_key), ("gpu_tag_value", gpu_tag_value)):
            if not tag or tag != tag.strip():
                raise ValueError(
                    f"run_launcher.config.{name} must be a non-empty tag without surrounding "
                    f"spaces, got {tag!r}"
                )
        self.gpu_tag_key = gpu_tag_key
        self.gpu_tag_value = gpu_tag_value
        mode = (env_value(ENV_VAR) or "").lower()
        if mode not in ("", "docker", "local"):
            raise ValueError(f"{ENV_VAR} must be 'docker' or 'local', got {mode!r}")
        if mode == "docker" and docker is None:
            raise ValueError(
                f"{ENV_VAR}=docker but the run_launcher config has no 'docker' section "
                "(image, container_kwargs, ...) to launch GPU containers with"
            )
        # `docker: {}` is a docker section too (image from the code location's container)
        self.docker_config = dict(docker) if docker is not None and mode != "local" else None
        if self.docker_config is not None:
            check_docker_config(self.docker_config)
            device_requests_on()  # a bad switch is named when the instance loads
            docker_volumes()
        # local runs fork from a warm worker (launcher.warm) when configured and not switched off
        self.warm_config = (
            dict(warm_workers) if warm_workers is not None and warm_workers_allowed() else None
        )
        for key in ("idle_timeout_s", "start_timeout_s"):
            value = (self.warm_config or {}).get(key, 1)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"run_launcher.config.warm_workers.{key} must be a whole number of seconds "
                    f">= 1, got {value!r}"
                )
        self._local: RunLauncher | None = None
        self._docker: RunLauncher | None = None
        self.k8s = None  # every run a Kubernetes Job, in the GPU or the CPU node pool
        if kubernetes is not None and mode != "local":
            if self.docker_config is not None:
                raise ValueError("run_launcher.config has both docker and kubernetes; keep one")
            from qpipe_dagster.launcher.k8s.launcher import KubernetesTarget

            self.k8s = KubernetesTarget(kubernetes)
        super().__init__()

    # ConfigurableClass --------------------------------------------------------------------
    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        return {
            "docker": Field(Noneable(DOCKER_SCHEMA), is_required=False, default_value=None),
            "gpu_tag_key": Field(str, is_required=False, default_value=GPU_TAG_KEY),
            "gpu_tag_value": Field(str, is_required=False, default_value=GPU_TAG_VALUE),
            "kubernetes": Field(  # checked by launcher.k8s (dagster-k8s is an optional extra)
                Noneable(Permissive()), is_required=False, default_value=None
            ),
            "warm_workers": Field(
                Noneable(Shape(WARM_SCHEMA)),
                is_required=False,
                default_value=None,
                description="fork local runs from a process that has the code and model loaded",
            ),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> GpuRoutingRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    # delegates ----------------------------------------------------------------------------
    @property
    def docker_enabled(self) -> bool:
        return self.docker_config is not None

    @property
    def local_launcher(self) -> RunLauncher:
        if self._local is None:
            if self.warm_config is not None:
                self._local = WarmRunLauncher(
                    idle_timeout=self.warm_config.get("idle_timeout_s", 600),
                    start_timeout=self.warm_config.get("start_timeout_s", 180),
                )
            else:
                self._local = DefaultRunLauncher()
            self._local.register_instance(self._instance)
        return self._local

    def container_kwargs(self) -> dict[str, Any]:
        """The kwargs GPU containers are created with (device requests and volumes included)."""
        cfg = self.docker_config or {}
        return gpu_container_kwargs(
            cfg.get("container_kwargs"),
            cfg.get("device_requests"),
            devices=device_requests_on(),
            volumes=docker_volumes(),
        )

    def docker_launcher_config(self) -> dict[str, Any]:
        """DockerRunLauncher's arguments: the config, completed from the environment now."""
        cfg = {
            k: v
            for k, v in (self.docker_config or {}).items()
            if k not in ("device_requests", "env_prefixes")
        }
        image = env_value(IMAGE_ENV)
        if image and not cfg.get("image"):
            cfg["image"] = image
        network = env_value(NETWORK_ENV)
        if network and not cfg.get("network") and not cfg.get("networks"):
            cfg["network"] = network
        prefixes = tuple((self.docker_config or {}).get("env_prefixes") or ())
        names = list(cfg.get("env_vars") or [])
        names += sorted(
            k for k, v in os.environ.items() if prefixes and k.startswith(prefixes) and v.strip()
        )
        if names:
            cfg["env_vars"] = list(dict.fromkeys(names))
        cfg["container_kwargs"] = self.container_kwargs()
        return cfg

    @property
    def docker_launcher(self) -> RunLauncher:
        if self.docker_config is None:
            raise DagsterLaunchFailedError("Docker GPU launching is not configured")
        if self._docker is None:
            try:
                from dagster_docker import DockerRunLauncher
            except ImportError as exc:
                raise DagsterLaunchFailedError(
                    "GPU runs are configured to launch in Docker but dagster-docker is not "
                    f"installed ({exc}); pip install dagster-docker or set {ENV_VAR}=local"
                ) from exc
            self._docker = DockerRunLauncher(**self.docker_launcher_config())
            self._docker.register_instance(self._instance)
        return self._docker

    def _launcher_for(self, run: DagsterRun | None) -> RunLauncher:
        if run is not None and self.k8s and run.tags.get(LAUNCHER_TAG) in K8S_TARGETS:
            return self.k8s.launcher(self._instance)
        if run is not None and run.tags.get(LAUNCHER_TAG) == DOCKER_GPU:
            return self.docker_launcher
        return self.local_launcher

    # routing ------------------------------------------------------------------------------
    def _step_tags(self, run: DagsterRun) -> list[tuple[str, Mapping[str, str] | None]]:
        if not run.execution_plan_snapshot_id:
            return []
        snap = self._instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        keys = set(run.step_keys_to_execute or [])
        return [(s.key, s.tags) for s in snap.steps if not keys or s.key in keys]

    def _asset_tags(
        self, run: DagsterRun, workspace: Any
    ) -> list[tuple[AssetKey, Mapping[str, str] | None]]:
        origin = run.remote_job_origin
        if workspace is None or origin is None:
            return []
        repo_origin = origin.repository_origin
        try:
            location = workspace.get_code_location(repo_origin.code_location_origin.location_name)
            repo = location.get_repository(repo_origin.repository_name)
        except Exception:  # location not loaded: fall back to run and step tags
            return []
        if run.asset_selection:
            snaps = [repo.get_asset_node_snap(k) for k in run.asset_selection]
        else:
            snaps = list(repo.get_asset_node_snaps(job_name=run.job_name))
        return [(s.asset_key, s.tags) for s in snaps if s is not None]

    def route(self, run: DagsterRun, workspace: Any = None) -> Route:
        """Decide GPU or not for ``run`` (see the module docstring for the sources)."""
        return decide_route(
            run,
            self._step_tags(run),
            self._asset_tags(run, workspace),
            self.gpu_tag_key,
            self.gpu_tag_value,
        )

    # RunLauncher --------------------------------------------------------------------------
    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        try:
            route = self.route(run, context.workspace)
        except RoutingTagError as exc:
            self._instance.add_run_tags(run.run_id, {REASON_TAG: str(exc)[:200]})
            raise DagsterLaunchFailedError(f"run {run.run_id} not launched: {exc}") from None
        target = DOCKER_GPU if route.gpu and self.docker_enabled else LOCAL
        target = self.k8s.target(route.gpu) if self.k8s else target
        reason = route.reason
        if route.gpu and not self.docker_enabled and not self.k8s:
            reason += "; Docker GPU launching not configured, launched locally"
        self._instance.add_run_tags(
            run.run_id,
            {LAUNCHER_TAG: target, REASON_TAG: reason[:200]},
        )
        run = self._instance.get_run_by_id(run.run_id) or run
        launch_context = LaunchRunContext(dagster_run=run, workspace=context.workspace)
        if target == LOCAL or target in K8S_TARGETS:
            self._launcher_for(run).launch_run(launch_context)
            return
        self._launch_docker(run, launch_context)

    def _launch_docker(self, run: DagsterRun, context: LaunchRunContext | ResumeRunContext) -> None:
        import docker.errors

        launcher = self.docker_launcher
        origin = run.job_code_origin
        if not self.docker_launcher_config().get("image") and not (
            origin and origin.repository_origin.container_image
        ):
            raise DagsterLaunchFailedError(
                f"GPU run {run.run_id}: no image to run it in: set run_launcher.config.docker."
                f"image in dagster.yaml or {IMAGE_ENV} (or give the code location a container "
                "image: DAGSTER_CURRENT_IMAGE)"
            )
        try:
            if isinstance(context, ResumeRunContext):
                launcher.resume_run(context)
            else:
                launcher.launch_run(context)
        except docker.errors.DockerException as exc:
            devices = device_requests_on()
            message = docker_failure_message(run.run_id, exc, devices=devices)
            self._remove_created_container(run.run_id)
            raise DagsterLaunchFailedError(message) from exc

    def _remove_created_container(self, run_id: str) -> None:
        """A container created but refused at start (no NVIDIA runtime) would stay behind."""
        try:
            import docker

            run = self._instance.get_run_by_id(run_id)
            container_id = (run.tags if run else {}).get("docker/container_id")
            if container_id:
                docker.from_env().containers.get(container_id).remove(force=True)
        except Exception:  # best effort: the launch error is what the operator needs
            pass

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is not None and run.tags.get(LAUNCHER_TAG) == DOCKER_GPU and not self.docker_enabled:
            raise DagsterLaunchFailedError(
                f"run {run_id} runs in a Docker GPU container ({LAUNCHER_TAG}={DOCKER_GPU}), but "
                f"Docker launching is now off (no run_launcher.config.docker, or {ENV_VAR}=local): "
                "turn it back on to terminate the run, or stop its container with `docker stop`"
            )
        return self._launcher_for(run).terminate(run_id)

    @property
    def supports_check_run_worker_health(self) -> bool:
        # Docker GPU containers, Kubernetes Jobs and warm-forked local runs can be checked;
        # DefaultRunLauncher has no health check
        return self.docker_enabled or self.k8s is not None or self.warm_config is not None

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        if self.k8s and run.tags.get(LAUNCHER_TAG) in K8S_TARGETS:
            return self._launcher_for(run).check_run_worker_health(run)
        if run.tags.get(LAUNCHER_TAG) == DOCKER_GPU:
            return self.docker_launcher.check_run_worker_health(run)
        if self.warm_config is not None:
            return self.local_launcher.check_run_worker_health(run)
        # a cold local run worker reports its own status; RUNNING keeps monitoring from resuming it
        return CheckRunHealthResult(
            WorkerStatus.RUNNING, msg="local run worker: health not checked by the launcher"
        )

    @property
    def supports_resume_run(self) -> bool:
        return self.docker_enabled or self.k8s is not None

    def resume_run(self, context: ResumeRunContext) -> None:
        run = context.dagster_run
        if self.k8s and run.tags.get(LAUNCHER_TAG) in K8S_TARGETS:
            return self._launcher_for(run).resume_run(context)
        if run.tags.get(LAUNCHER_TAG) != DOCKER_GPU:
            raise NotImplementedError(
                f"run {run.run_id} was launched locally ({LAUNCHER_TAG}="
                f"{run.tags.get(LAUNCHER_TAG)}); only Docker GPU runs can be resumed"
            )
        self._launch_docker(run, context)

    def dispose(self) -> None:
        for launcher in (self._local, self._docker):
            if launcher is not None:
                launcher.dispose()
        if self.k8s is not None:
            self.k8s.dispose()

    def join(self, timeout: int = 30) -> None:
        if self._local is not None:
            self._local.join(timeout=timeout)
