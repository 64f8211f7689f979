"""Kubernetes target of the GPU router, split as dagster-k8s is: `container_context` (what a
node pool adds to a run's pod), `job` (the Job manifest, built by dagster-k8s's own code) and
`launcher` (a K8sRunLauncher that submits it).

Every run goes to Kubernetes when the router's config has a `kubernetes` section; runs that
touch the GPU tag get the `gpu_pool` (an `nvidia.com/gpu` limit, its node selector and
tolerations), the rest the `cpu_pool`. dagster-k8s is imported only when that section is set.
"""

from qpipe_dagster.launcher.k8s.container_context import K8S_CPU, K8S_GPU, K8S_TARGETS

__all__ = ["K8S_CPU", "K8S_GPU", "K8S_TARGETS"]
