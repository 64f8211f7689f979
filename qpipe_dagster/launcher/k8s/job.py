"""The Kubernetes Job a run is launched as, built by dagster-k8s's own `construct_dagster_k8s_job`.

Kept apart from the launcher so the manifest can be built without a cluster (tests, a dry run):
the launcher submits exactly what `build_run_job` returns. The steps are those of dagster-k8s
0.29's `K8sRunLauncher._launch_k8s_job_with_args`; the pool's layer comes in through the
launcher's `get_container_context_for_run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from dagster import _check as check
from dagster._core.storage.dagster_run import DagsterRun

if TYPE_CHECKING:
    import kubernetes.client
    from dagster_k8s import K8sRunLauncher


def run_job_args(launcher: K8sRunLauncher, run: DagsterRun, resume: bool = False) -> list[str]:
    """The run worker's command line, as K8sRunLauncher.launch_run / resume_run give it."""
    from dagster._grpc.types import ExecuteRunArgs, ResumeRunArgs

    cls = ResumeRunArgs if resume else ExecuteRunArgs
    return list(
        cls(
            job_origin=check.not_none(run.job_code_origin),
            run_id=run.run_id,
            instance_ref=launcher._instance.get_ref(),
            set_exit_code_on_failure=launcher.fail_pod_on_run_failure,
        ).get_command_args()
    )


def build_run_job(
    launcher: K8sRunLauncher, run: DagsterRun, job_name: str, args: Sequence[str] | None
) -> kubernetes.client.V1Job:
    """The V1Job for `run`: launcher config, code location context, run tags, then the pool."""
    from dagster_k8s.job import construct_dagster_k8s_job
    from dagster_k8s.utils import get_deployment_id_label

    container_context = launcher.get_container_context_for_run(run)
    job_origin = check.not_none(run.job_code_origin)
    user_defined_k8s_config = container_context.run_k8s_config
    job_config = container_context.get_k8s_job_config(
        job_image=job_origin.repository_origin.container_image, run_launcher=launcher
    )
    labels = {"dagster/job": job_origin.job_name, "dagster/run-id": run.run_id}
    deployment_name = get_deployment_id_label(user_defined_k8s_config)
    if deployment_name:
        labels["dagster/deployment-name"] = deployment_name
    if run.remote_job_origin:
        labels["dagster/code-location"] = (
            run.remote_job_origin.repository_origin.code_location_origin.location_name
        )
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=args,
        job_name=job_name,
        pod_name=job_name,
        component="run_worker",
        user_defined_k8s_config=user_defined_k8s_config,
        labels=labels,
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": job_origin.job_name}],
    )
    check.not_none(job.metadata).namespace = check.not_none(container_context.namespace)
    return job
