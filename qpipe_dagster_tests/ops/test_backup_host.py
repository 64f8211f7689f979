"""Backups cover everything needed to rebuild the host, and restore into mounted volumes.

Beyond the vector store, inbox and registry: the asset tables (the Arrow IO manager's files),
the Dagster instance database (pg_dump of PostgreSQL on a real throwaway cluster, or the local
SQLite files) and the PostgreSQL concept registry. The restore target folders are tmpfs mount
points here (as volumes are in production): a restore must write into them, never rename or
replace them (the runbook's old `mv /opt/dagster/state ...` failed on a mount point).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, asset, materialize

from qpipe_dagster.concepts import Concept, default_registry
from qpipe_dagster.ops.backup import Sources, restore_backup, run_backup
from qpipe_dagster.ops.manifest import BackupError
from qpipe_dagster.ops.targets import LocalTarget
from qpipe_dagster_tests.ops.helpers import fill_stores
from qpipe_dagster_tests.ops.prod_instance import use_prod_instance
from qpipe_dagster_tests.postgres_cluster import (  # noqa: F401  (fixtures)
    Cluster,
    postgres_cluster,
)


@asset
def answer() -> int:
    return 42


def _run_a_job() -> str:
    with DagsterInstance.get() as instance:
        result = materialize([answer], instance=instance)
        assert result.success
        return result.run_id


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _asset_files(folder: Path) -> None:
    """Asset tables as the Arrow IO manager writes them: <asset>/<concept>/part files."""
    from qpipe_dagster.storage.arrow_files import write_table
    from qpipe_dagster_tests.ops.helpers import objects

    write_table(objects("btc-halving", 30, seed=3), folder / "page_embeddings" / "btc-halving")
    write_table(objects("eth-merge", 5, seed=4), folder / "page_embeddings" / "eth-merge")


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[list[Path]]:
    """Mount tmpfs on folders the test names (skipped where mounting is not permitted)."""
    mounted: list[Path] = []

    def mount(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "qpipe-test", str(path)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if proc.returncode != 0:
            pytest.skip(f"cannot mount tmpfs here ({proc.stderr.strip()}): needs root in a VM")
        mounted.append(path)
        return path

    yield mount  # type: ignore[misc]
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def test_local_host_backup_restores_assets_and_instance_into_mount_points(
    dagster_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mounts
) -> None:
    fill_stores(dagster_home)
    _asset_files(dagster_home / "qpipe" / "assets")
    run_id = _run_a_job()
    assets_before = _files(dagster_home / "qpipe" / "assets")
    target = LocalTarget(tmp_path / "backups")
    result = run_backup(Sources.from_env(), target)
    names = {c.name: c for c in result.manifest.components}
    assert names["assets"].rows == len(assets_before)
    assert names["assets"].counts == {"page_embeddings": len(assets_before)}
    assert names["dagster-sqlite"].rows >= 2  # runs.db and the run's event log at least

    # a new host: DAGSTER_HOME and the asset folder are two mounted volumes
    new_home = mounts(tmp_path / "new" / "home")
    new_assets = mounts(tmp_path / "new" / "assets")
    shutil.copyfile(dagster_home / "dagster.yaml", new_home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(new_home))
    monkeypatch.setenv("QPIPE_ASSET_DIR", str(new_assets))
    sources = Sources.from_env()
    plan = restore_backup(result.backup_id, sources, target, dry_run=True)
    assert any("never replacing it" in s for s in plan.steps)
    restore_backup(result.backup_id, sources, target)
    assert os.path.ismount(new_home) and os.path.ismount(new_assets)  # written into, not replaced
    assert _files(new_assets) == assets_before
    assert default_registry().get("btc-halving") is not None
    with DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == DagsterRunStatus.SUCCESS
        assert instance.get_latest_materialization_event(AssetKey("answer")) is not None

    # a second restore over the now non-empty stores is refused, naming the asset folder
    with pytest.raises(BackupError, match=re.escape(f"assets folder {new_assets} holds")):
        restore_backup(result.backup_id, sources, target, dry_run=True)


def test_postgres_host_backup_dumps_instance_and_registry_and_restores(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_cluster: Cluster,  # noqa: F811  (the fixture imported above)
) -> None:
    if shutil.which("pg_dump") is None:
        pytest.skip("pg_dump not installed: apt-get install postgresql-client")
    home = tmp_path / "home"
    home.mkdir()
    url = use_prod_instance(monkeypatch, home, postgres_cluster)
    monkeypatch.setenv("QPIPE_CONCEPTS_URL", url)  # the registry in the instance's database
    for var in ("QPIPE_ASSET_DIR", "QPIPE_LANCE_PATH", "QPIPE_INBOX_PATH", "WEAVIATE_URL"):
        monkeypatch.delenv(var, raising=False)
    default_registry().upsert(Concept.create("Halving", ["https://a.example/"], "BTC-USD"))
    default_registry().upsert(Concept.create("Merge", ["https://b.example/"]))
    run_id = _run_a_job()
    target = LocalTarget(tmp_path / "backups")
    result = run_backup(Sources.from_env(), target)
    names = {c.name: c for c in result.manifest.components}
    assert names["dagster-db"].kind == "pgdump" and names["dagster-db"].rows == 1
    assert names["dagster-db"].counts == {"SUCCESS": 1}
    assert names["concepts"].rows == 2
    assert "dagster-sqlite" not in names  # the instance is PostgreSQL

    # restoring into the same, non-empty database is refused before anything is written
    with pytest.raises(BackupError, match=r"Dagster instance database .* is not empty"):
        restore_backup(result.backup_id, Sources.from_env(), target)

    # a new host: an empty database, an empty DAGSTER_HOME
    fresh = postgres_cluster.new_database()
    monkeypatch.setenv("DAGSTER_PG_DB", fresh.rsplit("/", 1)[1])
    monkeypatch.setenv("QPIPE_CONCEPTS_URL", fresh)
    new_home = tmp_path / "new_home"
    new_home.mkdir()
    shutil.copyfile(home / "dagster.yaml", new_home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(new_home))
    restore_backup(result.backup_id, Sources.from_env(), target)
    assert [c.slug for c in default_registry().list()] == ["halving", "merge"]
    assert default_registry().get("halving").symbol == "BTC-USD"
    with DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == DagsterRunStatus.SUCCESS
        assert instance.get_latest_materialization_event(AssetKey("answer")) is not None
        # and the restored instance keeps working
        assert materialize([answer], instance=instance).success


def test_sqlite_registry_backup_restores_into_postgres_registry(
    dagster_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_cluster: Cluster,  # noqa: F811  (the fixture imported above)
) -> None:
    """Moving a host's SQLite registry into PostgreSQL is a backup and a restore."""
    fill_stores(dagster_home)
    target = LocalTarget(tmp_path / "backups")
    result = run_backup(Sources.from_env(), target)
    shutil.rmtree(dagster_home / "qpipe")
    monkeypatch.setenv("QPIPE_CONCEPTS_URL", postgres_cluster.new_database())
    restore_backup(result.backup_id, Sources.from_env(), target)
    assert [c.slug for c in default_registry().list()] == ["btc-halving", "eth-merge"]
    assert not (dagster_home / "qpipe" / "concepts.sqlite").exists()


def test_weaviate_filesystem_snapshot_must_reach_the_backup(
    dagster_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old: the snapshot stayed on the Weaviate host's volume; only the manifest was uploaded.
    Refused before Weaviate is contacted (so this runs without one), naming the fix."""
    monkeypatch.setenv("WEAVIATE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WEAVIATE_BACKUP_BACKEND", "filesystem")
    monkeypatch.delenv("WEAVIATE_BACKUP_PATH", raising=False)
    target = LocalTarget(tmp_path / "backups")
    with pytest.raises(BackupError, match="set WEAVIATE_BACKUP_PATH"):
        run_backup(Sources.from_env(), target)
    assert target.list_ids() == []


@pytest.mark.skipif(
    not os.environ.get("WEAVIATE_URL") or not os.environ.get("WEAVIATE_BACKUP_PATH"),
    reason="needs a Weaviate server with backup-filesystem: set WEAVIATE_URL and "
    "WEAVIATE_BACKUP_PATH (its BACKUP_FILESYSTEM_PATH as mounted here); none runs on this machine",
)
def test_weaviate_snapshot_is_packed_into_the_backup_and_restored(tmp_path: Path) -> None:
    sources = Sources.from_env()
    target = LocalTarget(tmp_path / "backups")
    result = run_backup(sources, target)
    packed = result.manifest.component("weaviate-snapshot")
    assert packed is not None and packed.rows > 0
    assert not (sources.weaviate_backup_path / result.backup_id).exists()  # type: ignore[operator]
    plan = restore_backup(result.backup_id, sources, target, dry_run=True)
    assert any("weaviate-snapshot" in s for s in plan.steps)
