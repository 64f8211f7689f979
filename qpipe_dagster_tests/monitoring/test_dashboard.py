"""The Grafana dashboard's queries return data: every panel's PromQL runs against a real
Prometheus scraping the real metrics endpoint after a real concept run (Scrapy crawl of the demo
site, the packaged model, LanceDB, a backtest) and a real backup. Grafana itself is not
installable here; its provisioning files are checked for shape and wiring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance

from qpipe_dagster.cli import main as qpipe
from qpipe_dagster.concepts import Concept, ConceptRegistry
from qpipe_dagster.definitions import defs
from qpipe_dagster.demo import register_demo
from qpipe_dagster.monitoring.collector import PipelineCollector
from qpipe_dagster.monitoring.server import build_registry, serve
from qpipe_dagster.monitoring.state import gpu_devices
from qpipe_dagster_tests.monitoring import promstack

GRAFANA = promstack.REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "qpipe.json"


def _panels() -> list[dict]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_provisioning_wires_the_dashboard_to_the_prometheus_datasource() -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/qpipe.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    titles = {p["title"] for p in _panels()}
    for needed in ("Runs finished per hour", "Failed runs (last 24 h)", "Inbox pending",
                   "Daily caps used", "Last backup age", "Filesystem used by state path",
                   "GPU memory used", "Circuit breakers"):  # fmt: skip
        assert needed in titles
    for panel in _panels():
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])


def _scrapes(prom: str) -> float:
    found = promstack.query(prom, "count_over_time(qpipe_concepts[5m])")
    return float(found[0]["value"][1]) if found else 0.0


@pytest.mark.slow
def test_every_panel_query_returns_data_after_a_concept_run(
    dagster_home: Path, demo_site: tuple[str, Path], tmp_path: Path
) -> None:
    promstack.need("prometheus", "prometheus")
    base_url, _ = demo_site
    register_demo(base_url)
    # one seed that 404s, so the failed-fetches-by-class panel has a class to show
    ConceptRegistry(dagster_home / "qpipe" / "concepts.sqlite").upsert(
        Concept.create("demo", [base_url + "no-such-page.html"])
    )
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("concepts", ["demo"])
        job = defs.resolve_job_def("concept_pipeline")
        assert job.execute_in_process(partition_key="demo", instance=instance).success
        assert qpipe(["backup"]) == 0

        port = promstack.free_port()
        server, _ = serve("127.0.0.1", port, build_registry(PipelineCollector(instance)))
        try:
            with promstack.prometheus(tmp_path, {"qpipe": f"127.0.0.1:{port}"}) as prom:
                promstack.wait_for(
                    lambda: _scrapes(prom) >= 3, 90, "three scrapes of the metrics endpoint"
                )
                empty, gpu_only = [], []
                for panel in _panels():
                    for target in panel["targets"]:
                        result = promstack.query(prom, target["expr"])
                        if result:
                            continue
                        if "qpipe_gpu_" in target["expr"] and not gpu_devices():
                            gpu_only.append(panel["title"])
                        else:
                            empty.append(f"{panel['title']}: {target['expr']}")
        finally:
            server.shutdown()
    assert empty == [], "panels without data:\n" + "\n".join(empty)
    # without a GPU exactly the GPU panels are empty (the exporter makes up no zeros for them)
    assert set(gpu_only) <= {"GPU memory used", "GPU utilisation"}
