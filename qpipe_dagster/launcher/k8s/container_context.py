"""What a node pool adds to a run's pod: resources, node selector, tolerations.

dagster-k8s already merges per-run Kubernetes config (launcher config, the code location's
container context, the `dagster-k8s/config` run tag) into a K8sContainerContext; a pool is one
more layer merged last, so the GPU limit and the pool's placement cannot be lost by a run tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

K8S_GPU = "k8s-gpu"  # value of the router's qpipe/launcher run tag
K8S_CPU = "k8s-cpu"
K8S_TARGETS = (K8S_GPU, K8S_CPU)
WHERE = "run_launcher.config.kubernetes"

# NVIDIA GPU Feature Discovery (GPU operator, most managed clusters) labels GPU nodes with this;
# GPU node pools are commonly tainted nvidia.com/gpu (GKE does it itself) so only pods that
# tolerate it land there.
DEFAULT_GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
DEFAULT_GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


@dataclass(frozen=True)
class NodePool:
    """Placement and size of one kind of run pod."""

    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: list[Mapping[str, Any]] = field(default_factory=list)
    resources: Mapping[str, Any] = field(default_factory=dict)  # V1ResourceRequirements
    gpu_resource: str | None = None  # extended resource name, e.g. nvidia.com/gpu
    gpu_count: int = 0

    def container_config(self) -> dict[str, Any]:
        resources = {k: dict(v) for k, v in self.resources.items()}
        if self.gpu_resource and self.gpu_count:
            # extended resources are set as limits; Kubernetes copies them to requests
            resources.setdefault("limits", {})[self.gpu_resource] = str(self.gpu_count)
        return {"resources": resources} if resources else {}

    def pod_spec_config(self) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if self.node_selector:
            spec["node_selector"] = dict(self.node_selector)
        if self.tolerations:
            spec["tolerations"] = [dict(t) for t in self.tolerations]
        return spec


@dataclass(frozen=True)
class NodePools:
    cpu: NodePool
    gpu: NodePool

    def for_target(self, target: str | None) -> NodePool:
        return self.gpu if target == K8S_GPU else self.cpu


def _pool(raw: Any, name: str, gpu: bool) -> NodePool:
    from dagster_k8s.models import k8s_snake_case_dict
    from kubernetes.client import V1ResourceRequirements, V1Toleration

    where = f"{WHERE}.{name}"
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a mapping, got {raw!r}")
    allowed = {"node_selector", "tolerations", "resources"} | (
        {"gpu_resource", "gpu_count"} if gpu else set()
    )
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    selector = raw.get("node_selector", DEFAULT_GPU_NODE_SELECTOR if gpu else {})
    if not isinstance(selector, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
    ):
        raise ValueError(f"{where}.node_selector must map label names to strings, got {selector!r}")
    tolerations = raw.get("tolerations", DEFAULT_GPU_TOLERATIONS if gpu else [])
    if not isinstance(tolerations, list):
        raise ValueError(f"{where}.tolerations must be a list, got {tolerations!r}")
    checked = []
    for i, tol in enumerate(tolerations):
        try:  # the Kubernetes model's own field names: a typo would be dropped by the API
            checked.append(k8s_snake_case_dict(V1Toleration, tol))
        except Exception as exc:  # dagster-k8s raises a bare Exception naming the keys
            raise ValueError(f"{where}.tolerations[{i}]: {exc}") from None
    resources = raw.get("resources", {})
    try:
        resources = k8s_snake_case_dict(V1ResourceRequirements, resources)
    except Exception as exc:
        raise ValueError(f"{where}.resources: {exc} (use requests / limits)") from None
    gpu_resource = raw.get("gpu_resource", "nvidia.com/gpu") if gpu else None
    count = raw.get("gpu_count", 1) if gpu else 0
    if gpu:
        if not isinstance(gpu_resource, str) or "/" not in gpu_resource.strip("/"):
            raise ValueError(
                f"{where}.gpu_resource must be an extended resource name like nvidia.com/gpu, "
                f"got {gpu_resource!r}"
            )
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"{where}.gpu_count must be a whole number >= 1, got {count!r}")
    return NodePool(dict(selector), checked, resources, gpu_resource, count)


def pools_from_config(config: Mapping[str, Any]) -> NodePools:
    """`cpu_pool` and `gpu_pool` of the router's `kubernetes` section, checked; ValueError
    naming the field otherwise."""
    return NodePools(
        cpu=_pool(config.get("cpu_pool"), "cpu_pool", gpu=False),
        gpu=_pool(config.get("gpu_pool"), "gpu_pool", gpu=True),
    )


def pool_container_context(pool: NodePool, target: str) -> Any:
    """The pool as a K8sContainerContext layer (merged last by the launcher)."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import UserDefinedDagsterK8sConfig

    return K8sContainerContext(
        run_k8s_config=UserDefinedDagsterK8sConfig(
            container_config=pool.container_config(),
            pod_spec_config=pool.pod_spec_config(),
            pod_template_spec_metadata={"labels": {"qpipe/pool": target}},
        )
    )
