"""deploy/dagster.prod.yaml loads as a real DagsterInstance and its PostgreSQL storage works.

Containers crash-looped with `No module named 'psycopg'`: SQLAlchemy 2.1 maps a bare
`postgresql://` to psycopg 3, while dagster-postgres (and qpipe) install psycopg2.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, asset, materialize
from sqlalchemy.engine import make_url

from qpipe_dagster_tests.ops.prod_instance import PROD_YAML, use_prod_instance
from qpipe_dagster_tests.postgres_cluster import (  # noqa: F401  (fixtures)
    Cluster,
    postgres_cluster,
)


def _storage_url(instance: DagsterInstance) -> str:
    return instance.run_storage.postgres_url  # type: ignore[attr-defined]


def test_prod_instance_url_uses_the_installed_driver() -> None:
    """The scheme in the file resolves, through SQLAlchemy, to a driver that imports here."""
    from dagster_postgres.utils import get_conn_string

    db = yaml.safe_load(PROD_YAML.read_text())["storage"]["postgres"]["postgres_db"]
    url = get_conn_string("u", "p", "h", "d", "5432", scheme=db.get("scheme", "postgresql"))
    dialect = make_url(url).get_dialect()
    assert dialect.driver == "psycopg2", url
    importlib.import_module(dialect.driver)  # the module SQLAlchemy will load at connect time


def test_prod_instance_runs_a_job_on_postgres(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_cluster: Cluster,  # noqa: F811  (the fixture imported above)
) -> None:
    use_prod_instance(monkeypatch, tmp_path, postgres_cluster)

    @asset
    def answer() -> int:
        return 42

    with DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert _storage_url(instance).startswith("postgresql+psycopg2://")
        pools = instance.get_concurrency_config().pool_config  # backtest steps only: see
        assert pools.pool_granularity.value == "op"  # launcher/test_gpu_pool.py
        assert pools.default_pool_limit == 1
        result = materialize([answer], instance=instance)
        assert result.success
        run_id = result.run_id
    # a second process-like load of the same file sees the run and its materialization
    with DagsterInstance.get() as again:
        run = again.get_run_by_id(run_id)
        assert run is not None and run.status == DagsterRunStatus.SUCCESS
        event = again.get_latest_materialization_event(AssetKey("answer"))
        assert event is not None and event.run_id == run_id
        again.add_dynamic_partitions("concepts", ["prod-test"])
        assert again.get_dynamic_partitions("concepts") == ["prod-test"]
