"""deploy/helm: the Dagster chart values checked against the chart's own values schema, the run
launcher section loaded by qpipe's router and turned into real Job manifests, and the receiver's
manifests read with the official kubernetes client's models (unknown fields fail)."""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from qpipe_dagster_tests.conftest import REPO, SHARED_DATA
from qpipe_dagster_tests.k8s_models import ManifestError, load_manifest, recording_k8s_api

HELM = REPO / "deploy" / "helm"
# helm/dagster/values.schema.json of github.com/dagster-io/dagster for the pinned dagster version.
# It is not vendored here: put it at this path (or point QPIPE_HELM_VALUES_SCHEMA at it).
SCHEMA = Path(
    os.environ.get("QPIPE_HELM_VALUES_SCHEMA")
    or SHARED_DATA / "helm" / "dagster-values.schema.json"
)


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[Path, list]]:
    with recording_k8s_api(tmp_path) as found:
        yield found


def _values() -> dict:
    return yaml.safe_load((HELM / "values.yaml").read_text())


def _overlay_schema(schema: dict) -> dict:
    """The schema as it applies to a values file that Helm merges over the chart's defaults:
    `required` (met by the defaults) and conditionals on it dropped, and the references to
    kubernetesjsonschema.dev (not reachable offline) left out; every local constraint stays."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key in ("required", "allOf"):
                    continue
                if key == "$ref" and not str(value).startswith("#"):
                    continue
                out[key] = strip(value)
            return out
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(copy.deepcopy(schema))


def _unknown_keys(value: Any, node: dict, defs: dict, path: str) -> list[str]:
    """Keys of `value` that the schema does not declare where it lists properties (jsonschema
    alone lets them through wherever the chart's schema omits additionalProperties: false)."""
    while "$ref" in node and str(node["$ref"]).startswith("#/definitions/"):
        node = {
            **defs[node["$ref"].rsplit("/", 1)[1]],
            **{k: v for k, v in node.items() if k != "$ref"},
        }
    branches = [b for b in node.get("anyOf", []) if isinstance(b, dict)]
    if branches and not node.get("properties"):
        found = [_unknown_keys(value, b, defs, path) for b in branches]
        return min(found, key=len)
    faults: list[str] = []
    if isinstance(value, dict):
        props = node.get("properties") or {}
        extra = node.get("additionalProperties")
        for key, item in value.items():
            if key in props:
                faults += _unknown_keys(item, props[key], defs, f"{path}.{key}")
            elif isinstance(extra, dict):
                faults += _unknown_keys(item, extra, defs, f"{path}.{key}")
            elif props:
                faults.append(f"{path}.{key}")
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            faults += _unknown_keys(item, node["items"], defs, f"{path}[{i}]")
    return faults


def _check_values(values: dict) -> list[str]:
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    overlay = _overlay_schema(schema)
    faults = [
        f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in jsonschema.Draft7Validator(overlay).iter_errors(values)
    ]
    return faults + [
        f"{k}: not a key of the chart's values"
        for k in _unknown_keys(values, schema, schema["definitions"], "values")
    ]


needs_schema = pytest.mark.skipif(
    not SCHEMA.is_file(),
    reason=f"the dagster chart's values.schema.json is not at {SCHEMA} (set QPIPE_HELM_VALUES_SCHEMA)",
)


@needs_schema
def test_values_match_the_dagster_charts_schema() -> None:
    assert _check_values(_values()) == []


@needs_schema
@pytest.mark.parametrize(
    ("edit", "fault"),
    [
        (lambda v: v["dagsterDaemon"].update(runCoordinater={}), "dagsterDaemon.runCoordinater"),
        (
            lambda v: v["dagster-user-deployments"]["deployments"][0].update(envSecret=[]),
            "deployments[0].envSecret",
        ),
        (lambda v: v["runLauncher"].update(type="K8sLauncher"), "runLauncher.type"),
        (lambda v: v["postgresql"].update(enabled="no"), "postgresql.enabled"),
    ],
)
def test_a_wrong_key_or_value_is_named(edit, fault) -> None:
    values = _values()
    edit(values)
    assert any(fault in f for f in _check_values(values)), _check_values(values)


def _router_config(values: dict) -> dict:
    launcher = values["runLauncher"]
    assert launcher["type"] == "CustomRunLauncher"
    custom = launcher["config"]["customRunLauncher"]
    assert (custom["module"], custom["class"]) == (
        "qpipe_dagster.launcher.gpu_router",
        "GpuRoutingRunLauncher",
    )
    return custom["config"]


def test_values_run_launcher_builds_valid_gpu_and_cpu_jobs(api_server, monkeypatch) -> None:
    """The values' router section (with a kubeconfig instead of in-cluster credentials) launches
    real runs; the Jobs it sends carry the values' pools and load into V1Job."""
    pytest.importorskip("dagster_k8s", reason="dagster-k8s (dev extra) not installed")
    from qpipe_dagster.launcher.gpu_router import LAUNCHER_TAG
    from qpipe_dagster_tests.k8s_models import load_model
    from qpipe_dagster_tests.launcher.test_gpu_router import make_run, setup

    monkeypatch.delenv("QPIPE_GPU_LAUNCHER", raising=False)
    kubeconfig, created = api_server
    values = _values()
    config = copy.deepcopy(_router_config(values))
    section = config["kubernetes"]
    section.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    section["job_image"] = "ghcr.io/example/qpipe:0.1.0"  # the chart passes the code location's
    with setup(config) as (instance, workspace):
        runs = [
            make_run(instance, workspace, "gpu_op_job"),
            make_run(instance, workspace, "cpu_only"),
        ]
        for run in runs:
            instance.launch_run(run.run_id, workspace)
        tags = [instance.get_run_by_id(r.run_id).tags[LAUNCHER_TAG] for r in runs]
    assert tags == ["k8s-gpu", "k8s-cpu"]
    gpu, cpu = (load_model(body, "V1Job").spec.template.spec for _, body in created)
    pools = section
    assert gpu.containers[0].resources.limits["nvidia.com/gpu"] == str(
        pools["gpu_pool"]["gpu_count"]
    )
    assert gpu.node_selector == pools["gpu_pool"]["node_selector"]
    assert gpu.tolerations[0].key == "nvidia.com/gpu"
    assert cpu.node_selector == pools["cpu_pool"]["node_selector"]
    assert "nvidia.com/gpu" not in (cpu.containers[0].resources.limits or {})
    assert created[0][0] == f"/apis/batch/v1/namespaces/{section['job_namespace']}/jobs"


def test_values_agree_with_each_other_and_the_receiver() -> None:
    values = _values()
    section = _router_config(values)["kubernetes"]
    deployment = values["dagster-user-deployments"]["deployments"][0]
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    for part in ("dagsterWebserver", "dagsterDaemon"):  # they load the router class
        assert f"{values[part]['image']['repository']}:{values[part]['image']['tag']}" == image
    assert section["service_account_name"] == values["global"]["serviceAccountName"]
    assert section["postgres_password_secret"] == values["global"]["postgresqlSecretName"]
    assert section["dagster_home"] == values["global"]["dagsterHome"]
    assert values["postgresql"]["enabled"] is False  # external PostgreSQL
    assert deployment["env"]["QPIPE_ASSET_URL"].startswith("s3://")  # no shared disk in K8s
    receiver = _receiver_docs()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert receiver["image"] == image


def _receiver_docs() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((HELM / "receiver.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_receiver_manifests_load_into_the_kubernetes_models() -> None:
    docs = _receiver_docs()
    assert set(docs) == {"Deployment", "Service", "PodDisruptionBudget"}
    deployment = load_manifest(docs["Deployment"])
    service = load_manifest(docs["Service"])
    pdb = load_manifest(docs["PodDisruptionBudget"])

    assert deployment.spec.replicas >= 2
    labels = deployment.spec.template.metadata.labels
    assert deployment.spec.selector.match_labels.items() <= labels.items()
    assert service.spec.selector.items() <= labels.items()
    assert pdb.spec.selector.match_labels.items() <= labels.items()
    assert pdb.spec.min_available < deployment.spec.replicas  # a rolling node drain can proceed
    [container] = deployment.spec.template.spec.containers
    [port] = container.ports
    assert service.spec.ports[0].target_port == port.name

    # the compose file's receiver: same command, same readiness URL and port, same image user
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["receiver"]
    assert container.command == compose["command"]
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(compose["healthcheck"]["test"]))
    assert (port.container_port, container.readiness_probe.http_get.path) == (
        int(url.group(1)),
        url.group(2),
    )
    assert container.liveness_probe.http_get.path == "/health"
    from webhook_sensor.app import create_app
    from webhook_sensor.settings import Settings

    app = create_app(  # the probes ask the receiver for routes it serves to GET
        Settings(
            current_signing_key="k1",
            next_signing_key="k2",
            receiver_url="https://qpipe.test/api/qstash",
            inbox_path=REPO / "unused.sqlite",
            dagster_home=REPO / "unused",
            using_dev_keys=False,
        )
    )
    served = {r.path for r in app.routes if "GET" in (getattr(r, "methods", None) or ())}
    probes = [container.readiness_probe, container.liveness_probe, container.startup_probe]
    assert {p.http_get.path for p in probes} <= served
    assert "--uid 10001" in (REPO / "Dockerfile").read_text()
    assert deployment.spec.template.spec.security_context.run_as_user == 10001
    # several replicas need the shared inbox: QPIPE_INBOX_URL comes from the secret
    assert [e.secret_ref.name for e in container.env_from] == ["qpipe-env"]
    assert "QPIPE_INBOX_URL" in (HELM / "receiver.yaml").read_text()
    # /ready loads the chart's instance config, which reads the password from the chart's secret
    [pg] = [e for e in container.env if e.name == "DAGSTER_PG_PASSWORD"]
    assert pg.value_from.secret_key_ref.name == _values()["global"]["postgresqlSecretName"]
    assert pg.value_from.secret_key_ref.key == "postgresql-password"


def test_a_misspelt_receiver_field_fails() -> None:
    doc = _receiver_docs()["Deployment"]
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGets"] = {}
    with pytest.raises(ManifestError, match=r"readinessProbe: V1Probe has no field\(s\) httpGets"):
        load_manifest(doc)


def test_weaviate_values_replicate_every_collection() -> None:
    values = yaml.safe_load((HELM / "weaviate-values.yaml").read_text())
    factor = int(values["env"]["REPLICATION_MINIMUM_FACTOR"])
    assert 2 <= factor <= values["replicas"]
    compose = yaml.safe_load((REPO / "deploy" / "compose.weaviate.yml").read_text())
    assert compose["services"]["weaviate"]["image"].endswith(f":{values['image']['tag']}")
