"""GPU routing on Kubernetes without a cluster: real runs of a real code location go through the
router's real launch path into dagster-k8s's own job building; the Kubernetes API is a recorder on
127.0.0.1 that answers 201 and keeps the Job exactly as the client sent it, which is then read
with the official client's models (unknown fields fail)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("dagster_k8s", reason="dagster-k8s (dev extra) not installed")

from dagster._core.launcher import WorkerStatus
from dagster_k8s.job import get_job_name_from_run_id
from kubernetes.client import ApiClient

from qpipe_dagster.launcher.gpu_router import LAUNCHER_TAG, GpuRoutingRunLauncher
from qpipe_dagster.launcher.k8s import K8S_CPU, K8S_GPU
from qpipe_dagster.launcher.k8s.job import build_run_job, run_job_args
from qpipe_dagster_tests.k8s_models import ManifestError, load_model, recording_k8s_api
from qpipe_dagster_tests.launcher.test_gpu_router import make_run, setup

GPU_POOL = {
    "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    "tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ],
    "resources": {"requests": {"cpu": "4", "memory": "16Gi"}},
    "gpu_count": 1,
}
CPU_POOL = {
    "node_selector": {"qpipe.dev/pool": "cpu"},
    "resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
}


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[Path, list]]:
    with recording_k8s_api(tmp_path) as found:
        yield found


def k8s_config(kubeconfig: Path, **extra) -> dict:
    """The router's kubernetes section as deploy/helm/values.yaml sets it (plus a kubeconfig)."""
    return {
        "kubernetes": {
            "service_account_name": "qpipe-dagster",
            "instance_config_map": "qpipe-dagster-instance",
            "postgres_password_secret": "qpipe-postgresql-secret",
            "dagster_home": "/opt/dagster/dagster_home",
            "job_image": "ghcr.io/example/qpipe:1.0",
            "job_namespace": "qpipe",
            "load_incluster_config": False,
            "kubeconfig_file": str(kubeconfig),
            "env_secrets": ["qpipe-env"],
            "cpu_pool": CPU_POOL,
            "gpu_pool": GPU_POOL,
            **extra,
        }
    }


def _pod(job) -> tuple:
    spec = job.spec.template.spec
    return spec, spec.containers[0]


def test_gpu_and_cpu_runs_become_jobs_in_their_node_pools(api_server, monkeypatch) -> None:
    monkeypatch.delenv("QPIPE_GPU_LAUNCHER", raising=False)
    kubeconfig, created = api_server
    with setup(k8s_config(kubeconfig)) as (instance, workspace):
        gpu_run = make_run(instance, workspace, "all_assets", ["gpu_asset"])
        cpu_run = make_run(instance, workspace, "cpu_only")
        instance.launch_run(gpu_run.run_id, workspace)
        instance.launch_run(cpu_run.run_id, workspace)
        assert instance.get_run_by_id(gpu_run.run_id).tags[LAUNCHER_TAG] == K8S_GPU
        assert instance.get_run_by_id(cpu_run.run_id).tags[LAUNCHER_TAG] == K8S_CPU

        assert [path for path, _ in created] == ["/apis/batch/v1/namespaces/qpipe/jobs"] * 2
        gpu_job, cpu_job = (load_model(body, "V1Job") for _, body in created)

        # what was sent is what build_run_job gives (the function the manifests are tested by)
        launcher = instance.run_launcher.k8s.launcher(instance)
        run = instance.get_run_by_id(gpu_run.run_id)
        name = get_job_name_from_run_id(run.run_id)
        built = build_run_job(launcher, run, name, run_job_args(launcher, run))
        sent = created[0][1]
        assert ApiClient().sanitize_for_serialization(built) == sent

        # run monitoring asks the Kubernetes launcher about Kubernetes runs (the Job's status)
        router = instance.run_launcher
        assert router.supports_check_run_worker_health and router.supports_resume_run
        health = router.check_run_worker_health(instance.get_run_by_id(cpu_run.run_id))
        assert health.status == WorkerStatus.RUNNING, health.msg

    spec, container = _pod(gpu_job)
    assert gpu_job.metadata.name == f"dagster-run-{gpu_run.run_id}"
    assert container.image == "ghcr.io/example/qpipe:1.0"
    assert container.resources.limits == {"nvidia.com/gpu": "1"}
    assert container.resources.requests == {"cpu": "4", "memory": "16Gi"}
    assert spec.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert [(t.key, t.operator, t.value, t.effect) for t in spec.tolerations] == [
        ("nvidia.com/gpu", "Equal", "present", "NoSchedule")
    ]
    assert gpu_job.spec.template.metadata.labels["qpipe/pool"] == K8S_GPU
    assert container.args[:3] == ["dagster", "api", "execute_run"]
    assert spec.service_account_name == "qpipe-dagster"
    assert {"qpipe-env"} <= {e.secret_ref.name for e in container.env_from if e.secret_ref}

    spec, container = _pod(cpu_job)
    assert "nvidia.com/gpu" not in (container.resources.limits or {})
    assert container.resources.requests == {"cpu": "1", "memory": "4Gi"}
    assert spec.node_selector == {"qpipe.dev/pool": "cpu"}
    assert not spec.tolerations
    assert cpu_job.spec.template.metadata.labels["qpipe/pool"] == K8S_CPU


def test_run_tag_config_merges_but_cannot_drop_the_gpu(api_server, monkeypatch) -> None:
    """Per-run Kubernetes config (dagster issue #9035): a run's dagster-k8s/config tag adds to
    its pod; the pool is merged last, so the GPU limit and GPU placement stay."""
    monkeypatch.delenv("QPIPE_GPU_LAUNCHER", raising=False)
    kubeconfig, created = api_server
    tag = {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "0", "memory": "64Gi"}}},
        "pod_spec_config": {"node_selector": {"cloud.google.com/gke-accelerator": "none"}},
    }
    with setup(k8s_config(kubeconfig)) as (instance, workspace):
        run = make_run(
            instance, workspace, "gpu_op_job", tags={"dagster-k8s/config": json.dumps(tag)}
        )
        instance.launch_run(run.run_id, workspace)
    spec, container = _pod(load_model(created[0][1], "V1Job"))
    assert container.resources.limits == {"nvidia.com/gpu": "1", "memory": "64Gi"}
    assert spec.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}


def test_default_gpu_pool_and_the_local_switch(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("QPIPE_GPU_LAUNCHER", raising=False)
    section = k8s_config(tmp_path / "unused")["kubernetes"]
    del section["gpu_pool"], section["cpu_pool"]
    router = GpuRoutingRunLauncher(kubernetes=section)
    gpu = router.k8s.pools.gpu
    assert gpu.node_selector == {"nvidia.com/gpu.present": "true"}
    assert gpu.tolerations == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert gpu.container_config() == {"resources": {"limits": {"nvidia.com/gpu": "1"}}}
    assert router.k8s.pools.cpu.pod_spec_config() == {}
    monkeypatch.setenv("QPIPE_GPU_LAUNCHER", "local")  # everything local again
    assert GpuRoutingRunLauncher(kubernetes=section).k8s is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gpu_pool": {"gpus": 1}}, "kubernetes.gpu_pool: unknown key(s) gpus"),
        ({"gpu_pool": {"tolerations": [{"kye": "x"}]}}, "gpu_pool.tolerations[0]: Unexpected keys"),
        ({"gpu_pool": {"gpu_count": 0}}, "gpu_pool.gpu_count must be a whole number >= 1"),
        ({"gpu_pool": {"gpu_resource": "gpu"}}, "gpu_pool.gpu_resource must be an extended"),
        ({"cpu_pool": {"gpu_count": 1}}, "cpu_pool: unknown key(s) gpu_count"),
        ({"cpu_pool": {"resources": {"limit": {}}}}, "cpu_pool.resources: Unexpected keys"),
        ({"cpu_pool": {"node_selector": {"a": 1}}}, "cpu_pool.node_selector must map label"),
        ({"instance_config_map": None}, "instance_config_map"),
        ({"job_namepsace": "x"}, "job_namepsace"),
    ],
)
def test_bad_kubernetes_section_names_the_field(tmp_path, monkeypatch, change, message) -> None:
    monkeypatch.delenv("QPIPE_GPU_LAUNCHER", raising=False)
    section = {**k8s_config(tmp_path / "unused")["kubernetes"], **change}
    section = {k: v for k, v in section.items() if v is not None}
    with pytest.raises(ValueError, match=__import__("re").escape(message)):
        GpuRoutingRunLauncher(kubernetes=section)


def test_docker_and_kubernetes_together_are_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("QPIPE_GPU_LAUNCHER", raising=False)
    section = k8s_config(tmp_path / "unused")["kubernetes"]
    with pytest.raises(ValueError, match="both docker and kubernetes; keep one"):
        GpuRoutingRunLauncher(docker={"image": "qpipe:gpu"}, kubernetes=section)


def test_unknown_field_in_a_manifest_fails() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
        "containers": [{"name": "x", "image": "y", "resource": {}}]}}}}  # fmt: skip
    with pytest.raises(ManifestError, match=r"containers\[0\]: V1Container has no field"):
        load_model(job, "V1Job")
