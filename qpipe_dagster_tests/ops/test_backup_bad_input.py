"""Backups and restores fed bad input: damaged manifests, unusable destinations, bad retention.

Each case is refused before anything is written, with a message naming what is wrong.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from qpipe_dagster.ops import snapshot
from qpipe_dagster.ops.backup import Sources, restore_backup, run_backup
from qpipe_dagster.ops.manifest import MANIFEST_NAME, BackupError
from qpipe_dagster.ops.targets import LocalTarget
from qpipe_dagster_tests.ops.helpers import fill_stores


@pytest.fixture
def backed_up(dagster_home: Path, tmp_path: Path) -> tuple[str, LocalTarget]:
    """A real backup of filled stores, then the stores wiped (an empty install to restore into)."""
    fill_stores(dagster_home)
    target = LocalTarget(tmp_path / "backups")
    backup_id = run_backup(Sources.from_env(), target).backup_id
    shutil.rmtree(dagster_home / "qpipe")
    return backup_id, target


def _edit_manifest(target: LocalTarget, backup_id: str, edit) -> None:
    path = target.root / backup_id / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _add(component: dict):
    return lambda d: d["components"].append(component)


def _set(index: int, **fields):
    return lambda d: d["components"][index].update(fields)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # old: IndexError 'list index out of range' from the restore plan
        (
            _add({"name": "graph", "kind": "neo4j", "file": None, "rows": 1, "digest": "x"}),
            r"components\[3\] \('graph'\): kind 'neo4j' is not one of lancedb, sqlite, weaviate",
        ),
        # old: TypeError "unsupported operand type(s) for /: 'PosixPath' and 'NoneType'"
        (
            _add(
                {"name": "jobs", "kind": "sqlite", "file": "jobs.sqlite", "rows": 1, "digest": "x"}
            ),
            r"\('jobs'\): a sqlite component must be one of inbox, concepts",
        ),
        # old: "holds 65 objects (manifest: 65) or its content digest differs"
        (_set(0, rows="65"), r"components\[0\] .*rows must be a whole number >= 0, got '65'"),
        (_set(1, file="manifest.json"), r"\('inbox'\): names an unsafe file 'manifest.json'"),
        (_set(1, file=None), r"\('inbox'\): a sqlite component needs a file, got None"),
        (_set(0, name="Chunks"), r"a lancedb component must be named 'lancedb:<name>'"),
        (lambda d: d["components"].append(d["components"][2]), "'concepts' is listed twice"),
        (lambda d: d.update(backend="chroma"), "manifest backend 'chroma' is not one of"),
        (lambda d: d.update(components={"inbox": {}}), "components must be a list of objects"),
        (lambda d: d.update(format_version=2, components="new"), "format_version 2 is not"),
    ],
)
def test_damaged_manifest_is_named_and_nothing_restored(
    backed_up: tuple[str, LocalTarget], edit, message: str
) -> None:
    backup_id, target = backed_up
    _edit_manifest(target, backup_id, edit)
    sources = Sources.from_env()
    for dry_run in (True, False):
        with pytest.raises(BackupError, match=message) as exc:
            restore_backup(backup_id, sources, target, dry_run=dry_run)
        assert MANIFEST_NAME in str(exc.value)
    assert snapshot.lance_tables(sources.lance_path) == []
    assert not sources.inbox_path.exists() and not sources.concepts_path.exists()


def test_unwritable_destination_is_refused_before_any_store_is_written(
    backed_up: tuple[str, LocalTarget], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old: the vectors were restored, then FileExistsError for the inbox; a second restore was
    then refused because the vector store was no longer empty."""
    backup_id, target = backed_up
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("QPIPE_INBOX_PATH", str(blocker / "inbox.sqlite"))
    sources = Sources.from_env()
    with pytest.raises(
        BackupError, match=rf"inbox {blocker}/inbox.sqlite cannot be created: {blocker} is a file"
    ):
        restore_backup(backup_id, sources, target)
    assert snapshot.lance_tables(sources.lance_path) == []

    monkeypatch.setenv("QPIPE_LANCE_PATH", str(blocker))
    monkeypatch.delenv("QPIPE_INBOX_PATH")
    with pytest.raises(BackupError, match=rf"LanceDB path {blocker} is a file, not a folder"):
        restore_backup(backup_id, Sources.from_env(), target, dry_run=True)


def test_sqlite_destination_that_is_not_an_empty_store_is_not_clobbered(
    backed_up: tuple[str, LocalTarget],
) -> None:
    backup_id, target = backed_up
    sources = Sources.from_env()
    sources.concepts_path.parent.mkdir(parents=True)
    # old: sqlite3.DatabaseError 'file is not a database', a bare traceback
    sources.concepts_path.write_bytes(b"not a database " * 100)
    with pytest.raises(
        BackupError, match=rf"concepts '{sources.concepts_path}' is not a readable SQLite database"
    ):
        restore_backup(backup_id, sources, target)
    assert sources.concepts_path.read_bytes() == b"not a database " * 100

    # old: a database holding other tables counted as empty and was replaced wholesale
    sources.concepts_path.unlink()
    db = sqlite3.connect(sources.concepts_path)
    db.execute("CREATE TABLE notes (x)")
    db.execute("INSERT INTO notes VALUES (1), (2)")
    db.commit()
    db.close()
    with pytest.raises(BackupError, match=r"not an empty concepts store: it holds tables notes"):
        restore_backup(backup_id, sources, target)
    db = sqlite3.connect(sources.concepts_path)
    assert db.execute("SELECT COUNT(*) FROM notes").fetchone() == (2,)
    db.close()
    assert snapshot.lance_tables(sources.lance_path) == []
    assert not sources.inbox_path.exists()


@pytest.mark.parametrize("days", [0, -1])
def test_bad_retention_is_refused_before_backing_up(
    dagster_home: Path, tmp_path: Path, days: int
) -> None:
    """Old: 0 silently kept every backup; -1 failed only after the backup had been written."""
    fill_stores(dagster_home)
    target = LocalTarget(tmp_path / "backups")
    with pytest.raises(BackupError, match=rf"retention must be .* >= 1 .*got {days}; nothing was"):
        run_backup(Sources.from_env(), target, retention_days=days)
    assert target.list_ids() == []
    assert not target.root.exists() or not any(target.root.iterdir())
