"""The active-model choice is part of every backup (component `active-model`) and restores into
whichever store the restoring host uses: the local file, or the PostgreSQL table beside the
registry. Old code left it out: a restored host searched the default model's collection."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from qpipe_dagster.concepts import ModelChoice, active_model_store, default_registry
from qpipe_dagster.embed.rotation import active_model, active_model_file, set_active_model
from qpipe_dagster.ops.backup import Sources, restore_backup, run_backup
from qpipe_dagster.ops.manifest import BackupError, Manifest
from qpipe_dagster.ops.targets import LocalTarget
from qpipe_dagster_tests.ops.helpers import fill_stores
from qpipe_dagster_tests.postgres_cluster import (  # noqa: F401  (fixtures)
    Cluster,
    postgres_cluster,
    postgres_url,
)

ROTATED = ModelChoice("all-MiniLM-L6-v2", 256)


@pytest.fixture(autouse=True)
def _unpinned(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("QPIPE_EMBED_MODEL", "QPIPE_EMBED_TRUNCATE_DIM"):
        monkeypatch.delenv(var, raising=False)


def test_local_choice_is_backed_up_and_restored(dagster_home: Path, tmp_path: Path) -> None:
    fill_stores(dagster_home)
    set_active_model(ROTATED)
    target = LocalTarget(tmp_path / "backups")
    result = run_backup(Sources.from_env(), target)
    [comp] = [c for c in result.manifest.components if c.name == "active-model"]
    assert comp.kind == "json" and comp.rows == 1 and comp.file == "active_model.json"

    # a second restore over the recorded choice is refused before anything is written
    with pytest.raises(BackupError, match=re.escape(f"choice in {active_model_file()} is already")):
        restore_backup(result.backup_id, Sources.from_env(), target, dry_run=True)

    shutil.rmtree(dagster_home / "qpipe")  # a new host
    plan = restore_backup(result.backup_id, Sources.from_env(), target)
    assert any(
        s.startswith("restore active-model: 1 rows into the active model") for s in plan.steps
    )
    assert active_model() == ROTATED
    assert json.loads(active_model_file().read_text()) == {
        "name": ROTATED.name,
        "truncate_dim": 256,
    }


def test_no_choice_recorded_means_no_component(dagster_home: Path, tmp_path: Path) -> None:
    fill_stores(dagster_home)
    result = run_backup(Sources.from_env(), LocalTarget(tmp_path / "backups"))
    assert "active-model" not in {c.name for c in result.manifest.components}


def test_local_choice_moves_into_postgres_with_the_registry(
    dagster_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_cluster: Cluster,  # noqa: F811  (the fixture imported above)
) -> None:
    """Moving a host to PostgreSQL is a backup and a restore, the choice included."""
    fill_stores(dagster_home)
    set_active_model(ROTATED)
    target = LocalTarget(tmp_path / "backups")
    result = run_backup(Sources.from_env(), target)
    shutil.rmtree(dagster_home / "qpipe")
    monkeypatch.setenv("QPIPE_CONCEPTS_URL", postgres_cluster.new_database())
    restore_backup(result.backup_id, Sources.from_env(), target)
    assert active_model_store().get() == ROTATED and active_model() == ROTATED
    assert not active_model_file().exists()
    assert [c.slug for c in default_registry().list()] == ["btc-halving", "eth-merge"]


def test_postgres_choice_is_in_the_backup_and_restores_into_a_fresh_database(
    dagster_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_cluster: Cluster,  # noqa: F811  (the fixture imported above)
) -> None:
    monkeypatch.setenv("QPIPE_CONCEPTS_URL", postgres_cluster.new_database())
    set_active_model(ROTATED)
    target = LocalTarget(tmp_path / "backups")
    result = run_backup(Sources.from_env(), target)
    assert "active-model" in {c.name for c in result.manifest.components}
    assert not active_model_file().exists()  # it was read from the table

    # the same database already holds a choice: refused, naming the table
    with pytest.raises(BackupError, match=r"choice in table qpipe_active_model at postgresql://"):
        restore_backup(result.backup_id, Sources.from_env(), target, dry_run=True)

    monkeypatch.setenv("QPIPE_CONCEPTS_URL", postgres_cluster.new_database())
    assert active_model_store().get() is None
    restore_backup(result.backup_id, Sources.from_env(), target)
    assert active_model_store().get() == ROTATED


def test_a_tampered_choice_is_refused_before_anything_is_written(
    dagster_home: Path, tmp_path: Path
) -> None:
    fill_stores(dagster_home)
    set_active_model(ROTATED)
    target = LocalTarget(tmp_path / "backups")
    result = run_backup(Sources.from_env(), target)
    folder = tmp_path / "backups" / result.backup_id
    manifest = Manifest.read(folder / "manifest.json")
    [comp] = [c for c in manifest.components if c.name == "active-model"]
    comp.digest = "0" * 64  # the file is intact, the manifest's content digest is not
    manifest.write(folder)
    shutil.rmtree(dagster_home / "qpipe")
    with pytest.raises(
        BackupError, match=r"active_model.json \(active-model\): its content digest"
    ):
        restore_backup(result.backup_id, Sources.from_env(), target)
    assert not (dagster_home / "qpipe" / "concepts.sqlite").exists()  # nothing was restored
    assert active_model_store().get() is None
