"""deploy/dagster.prod.yaml as a real Dagster instance, its storage on a throwaway PostgreSQL.

The file is copied unchanged; only the DAGSTER_PG_* variables it reads point at the test's
cluster (a fresh database per test), exactly as `.env` points them at the compose service.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from qpipe_dagster_tests.conftest import REPO
from qpipe_dagster_tests.postgres_cluster import Cluster

PROD_YAML = REPO / "deploy" / "dagster.prod.yaml"


def use_prod_instance(monkeypatch: pytest.MonkeyPatch, home: Path, cluster: Cluster) -> str:
    """Install the prod instance config in `home` and point DAGSTER_PG_* at a new database.

    Returns that database's postgresql:// URL (for psycopg2 checks and pg_dump).
    """
    pytest.importorskip(
        "dagster_postgres", reason="dagster-postgres missing: pip install qpipe[dev]"
    )
    url = cluster.new_database()
    parts = urlsplit(url)
    shutil.copyfile(PROD_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("QPIPE_DEPLOY", "prod")
    monkeypatch.setenv("DAGSTER_PG_HOST", parts.hostname or "")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(parts.port))
    monkeypatch.setenv("DAGSTER_PG_USER", parts.username or "")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", parts.password or "")
    monkeypatch.setenv("DAGSTER_PG_DB", parts.path.lstrip("/"))
    return url
