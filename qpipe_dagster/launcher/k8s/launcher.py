"""K8sRunLauncher with node pools, and the router's handle on it (`KubernetesTarget`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster._core.errors import DagsterLaunchFailedError
from dagster._core.storage.dagster_run import DagsterRun

from qpipe_dagster.launcher.k8s.container_context import (
    K8S_CPU,
    K8S_GPU,
    WHERE,
    NodePools,
    pool_container_context,
    pools_from_config,
)

POOL_KEYS = ("cpu_pool", "gpu_pool")
LAUNCHER_TAG = "qpipe/launcher"  # the router's tag (gpu_router.LAUNCHER_TAG), read here


def _check_launcher_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """K8sRunLauncher's own settings checked against its config schema (fields named)."""
    from dagster._config import process_config, resolve_to_config_type
    from dagster_k8s.job import DagsterK8sJobConfig

    result = process_config(
        resolve_to_config_type(DagsterK8sJobConfig.config_type_run_launcher()), dict(config)
    )
    if not result.success:
        faults = "; ".join(e.message for e in result.errors or [])
        raise ValueError(f"{WHERE}: {faults}")
    return dict(result.value or {})


def make_pool_launcher_class() -> type:
    """PoolK8sRunLauncher, defined when dagster-k8s is importable (it is an optional extra)."""
    from dagster import _check as check
    from dagster._core.storage.tags import DOCKER_IMAGE_TAG
    from dagster_k8s import K8sRunLauncher

    from qpipe_dagster.launcher.k8s.job import build_run_job

    class PoolK8sRunLauncher(K8sRunLauncher):
        """K8sRunLauncher whose run pods get the pool chosen by the router (`qpipe/launcher`)."""

        def __init__(self, pools: NodePools, **config: Any) -> None:
            self.pools = pools
            super().__init__(**config)

        def get_container_context_for_run(self, dagster_run: DagsterRun) -> Any:
            context = super().get_container_context_for_run(dagster_run)
            target = K8S_GPU if dagster_run.tags.get(LAUNCHER_TAG) == K8S_GPU else K8S_CPU
            return context.merge(pool_container_context(self.pools.for_target(target), target))

        def _launch_k8s_job_with_args(
            self, job_name: str, args: Sequence[str] | None, run: DagsterRun
        ) -> None:
            # dagster-k8s 0.29's method, with the Job built by build_run_job (what tests check)
            job = build_run_job(self, run, job_name, args)
            pod = check.not_none(check.not_none(job.spec).template.spec)
            namespace = check.not_none(check.not_none(job.metadata).namespace)
            self._instance.add_run_tags(run.run_id, {DOCKER_IMAGE_TAG: pod.containers[0].image})
            self._report_run_worker_creating(run, job_name, namespace)
            self._api_client.create_namespaced_job_with_retries(body=job, namespace=namespace)
            self._report_run_worker_created(run)

    return PoolK8sRunLauncher


class KubernetesTarget:
    """The router's `kubernetes` section: checked when the instance loads, the launcher built
    on first use (it loads the cluster credentials)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        if not isinstance(config, Mapping):
            raise ValueError(f"{WHERE} must be a mapping, got {config!r}")
        try:
            import dagster_k8s  # noqa: F401
        except ImportError as exc:
            raise ValueError(
                f"{WHERE} is set but dagster-k8s is not installed ({exc}); "
                "pip install -c constraints.txt '.[prod]'"
            ) from None
        self.pools = pools_from_config(config)
        self.launcher_config = _check_launcher_config(
            {k: v for k, v in config.items() if k not in POOL_KEYS}
        )
        self._launcher: Any = None

    @staticmethod
    def target(gpu: bool) -> str:
        return K8S_GPU if gpu else K8S_CPU

    def launcher(self, instance: Any) -> Any:
        if self._launcher is None:
            try:
                self._launcher = make_pool_launcher_class()(
                    pools=self.pools, **self.launcher_config
                )
            except Exception as exc:  # kubeconfig / in-cluster credentials missing
                raise DagsterLaunchFailedError(
                    f"Kubernetes run launcher could not start ({type(exc).__name__}: {exc}); "
                    f"check {WHERE}.load_incluster_config / kubeconfig_file"
                ) from exc
            self._launcher.register_instance(instance)
        return self._launcher

    def dispose(self) -> None:
        if self._launcher is not None:
            self._launcher.dispose()
