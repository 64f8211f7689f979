"""Backup -> wipe -> restore on the real local stores; corrupted backups are refused untouched."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lancedb
import pytest
import time_machine

from qpipe_dagster.ops import snapshot
from qpipe_dagster.ops.backup import Sources, apply_retention, restore_backup, run_backup
from qpipe_dagster.ops.manifest import MANIFEST_NAME, BackupError, Manifest
from qpipe_dagster.ops.targets import LocalTarget, target_from_env, target_from_url
from qpipe_dagster.store.objects import collection_name
from qpipe_dagster_tests.ops.helpers import DIM, MODEL, fill_stores, objects

TABLE = collection_name(MODEL, DIM)


def _table(home: Path):
    return lancedb.connect(str(home / "qpipe" / "vectors")).open_table(TABLE).to_arrow()


def _rows(path: Path, sql: str) -> list:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


@pytest.fixture
def filled(dagster_home: Path) -> Path:
    fill_stores(dagster_home)
    return dagster_home


def test_round_trip_restores_every_object(filled: Path, tmp_path: Path) -> None:
    sources = Sources.from_env()
    target = LocalTarget(tmp_path / "backups")
    before = _table(filled).sort_by("id")
    inbox_before = _rows(sources.inbox_path, "SELECT * FROM messages ORDER BY id")
    concepts_before = _rows(sources.concepts_path, "SELECT * FROM concepts ORDER BY slug")

    result = run_backup(sources, target)
    assert target.list_ids() == [result.backup_id]
    m = Manifest.read(target.root / result.backup_id / MANIFEST_NAME)
    comps = {c.name: c for c in m.components}
    assert comps[f"lancedb:{TABLE}"].rows == 65
    assert comps[f"lancedb:{TABLE}"].counts == {"btc-halving": 40, "eth-merge": 25}
    assert comps["inbox"].rows == 3 and comps["inbox"].counts == {"consumed": 1, "pending": 2}
    assert comps["concepts"].rows == 2

    shutil.rmtree(filled / "qpipe")  # wipe everything
    plan = restore_backup(result.backup_id, sources, target, dry_run=True)
    assert any("65 rows" in s for s in plan.steps)
    assert not (filled / "qpipe" / "inbox.sqlite").exists()  # dry run wrote nothing

    restore_backup(result.backup_id, sources, target)
    assert _table(filled).sort_by("id").equals(before)
    assert _rows(sources.inbox_path, "SELECT * FROM messages ORDER BY id") == inbox_before
    assert _rows(sources.concepts_path, "SELECT * FROM concepts ORDER BY slug") == concepts_before
    # the restored store is usable by the pipeline's own store class
    from qpipe_dagster.store.lance import LanceStore

    store = LanceStore(path=sources.lance_path, model=MODEL, dim=DIM)
    assert store.count("eth-merge") == 25
    assert store.upsert(objects("eth-merge", 25, seed=2)).unchanged == 25


def test_corrupted_backup_is_refused_and_store_untouched(filled: Path, tmp_path: Path) -> None:
    sources = Sources.from_env()
    target = LocalTarget(tmp_path / "backups")
    backup_id = run_backup(sources, target).backup_id
    data_file = target.root / backup_id / f"lancedb-{TABLE}.arrow"
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit in the middle of the vectors
    data_file.write_bytes(bytes(raw))

    # Case 1: the existing (non-empty) store stays exactly as it was.
    before = _table(filled)
    version = lancedb.connect(str(sources.lance_path)).open_table(TABLE).version
    with pytest.raises(BackupError, match=r"checksum mismatch for lancedb-.*\.arrow.*corrupted"):
        restore_backup(backup_id, sources, target)
    assert _table(filled).equals(before)
    assert lancedb.connect(str(sources.lance_path)).open_table(TABLE).version == version

    # Case 2: an empty store gets nothing, not a partial restore.
    shutil.rmtree(filled / "qpipe")
    with pytest.raises(BackupError, match="checksum mismatch"):
        restore_backup(backup_id, sources, target)
    assert snapshot.lance_tables(sources.lance_path) == []
    assert not sources.inbox_path.exists()


def test_tampered_content_with_matching_checksum_is_refused(filled: Path, tmp_path: Path) -> None:
    """A consistent-looking file whose objects differ from the manifest digest is refused."""
    sources = Sources.from_env()
    target = LocalTarget(tmp_path / "backups")
    backup_id = run_backup(sources, target).backup_id
    folder = target.root / backup_id
    db = sqlite3.connect(folder / "inbox.sqlite")
    db.execute("UPDATE messages SET status = 'pending'")
    db.commit()
    db.close()
    m = Manifest.read(folder / MANIFEST_NAME)
    inbox = m.component("inbox")
    assert inbox is not None
    from qpipe_dagster.ops.manifest import sha256_file

    inbox.sha256 = sha256_file(folder / "inbox.sqlite")  # forge the file checksum only
    m.write(folder)
    shutil.rmtree(filled / "qpipe")
    with pytest.raises(BackupError, match=r"inbox: snapshot holds 3 rows .* digest does not match"):
        restore_backup(backup_id, sources, target)
    assert not sources.inbox_path.exists()


def test_restore_refuses_non_empty_store(filled: Path, tmp_path: Path) -> None:
    sources = Sources.from_env()
    target = LocalTarget(tmp_path / "backups")
    backup_id = run_backup(sources, target).backup_id
    with pytest.raises(
        BackupError, match=r"needs empty stores.*holds 65 objects.*nothing was changed"
    ):
        restore_backup(backup_id, sources, target, dry_run=True)


def test_unknown_malformed_and_incomplete_backups(filled: Path, tmp_path: Path) -> None:
    sources = Sources.from_env()
    target = LocalTarget(tmp_path / "backups")
    with pytest.raises(BackupError, match="'yesterday' is not a qpipe backup id"):
        restore_backup("yesterday", sources, target)
    with pytest.raises(BackupError, match="qpipe-20200101-000000 not found"):
        restore_backup("qpipe-20200101-000000", sources, target)
    backup_id = run_backup(sources, target).backup_id
    (target.root / backup_id / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BackupError, match="manifest is not readable JSON"):
        restore_backup(backup_id, sources, target)
    # a backup without a manifest (interrupted upload) is not listed at all
    (target.root / backup_id / MANIFEST_NAME).unlink()
    assert target.list_ids() == []


def test_retention_keeps_last_days_and_the_newest(dagster_home: Path, tmp_path: Path) -> None:
    sources = Sources.from_env()  # empty install: the backup still has a manifest
    target = LocalTarget(tmp_path / "backups")
    now = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    ids = [
        run_backup(sources, target, now=now + timedelta(days=d), retention_days=None).backup_id
        for d in range(5)
    ]
    assert target.list_ids() == ids
    deleted = apply_retention(target, 2, now=now + timedelta(days=4))
    assert deleted == ids[:2]
    assert target.list_ids() == ids[2:]
    # far in the future every backup is old, but the newest one always stays
    assert apply_retention(target, 1, now=now + timedelta(days=400)) == ids[2:4]
    assert target.list_ids() == ids[4:]
    with pytest.raises(BackupError, match="at least 1 day"):
        apply_retention(target, 0, now=now)


def test_interrupted_backups_are_swept_once_past_retention(
    dagster_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Old: a backup killed mid-copy (`.ID.partial`) or mid-delete (a folder without its
    manifest) was never listed, so retention never removed it: its files stayed for good."""
    sources = Sources.from_env()
    target = LocalTarget(tmp_path / "backups")
    now = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    old = run_backup(sources, target, now=now - timedelta(days=1), retention_days=None).backup_id
    killed_copy = target.root / ".qpipe-20261110-030000.partial"
    killed_copy.mkdir()
    (killed_copy / "inbox.sqlite").write_bytes(b"x" * 1000)
    half_deleted = target.root / "qpipe-20261111-030000"
    half_deleted.mkdir()
    (half_deleted / "concepts.sqlite").write_bytes(b"x")
    recent = target.root / ".qpipe-20261119-220000.partial"  # may still be uploading: kept
    recent.mkdir()
    beside_complete = target.root / f".{old}.partial"  # not the complete backup it shadows
    beside_complete.mkdir()
    not_ours = target.root / "holiday-photos"
    not_ours.mkdir()
    assert target.list_incomplete() == [
        "qpipe-20261110-030000", "qpipe-20261111-030000", "qpipe-20261119-220000"
    ]  # fmt: skip

    result = run_backup(sources, target, now=now, retention_days=3)
    assert result.swept_incomplete == ["qpipe-20261110-030000", "qpipe-20261111-030000"]
    assert not killed_copy.exists() and not half_deleted.exists()
    assert recent.is_dir() and beside_complete.is_dir() and not_ours.is_dir()
    assert target.list_ids() == [old, result.backup_id]  # complete ones: retention's business

    from qpipe_dagster.cli import main as cli_main

    later = now + timedelta(days=5)
    recent.rename(target.root / f".qpipe-{later:%Y%m%d}-010000.partial")  # fresh again
    (target.root / ".qpipe-20261112-030000.partial").mkdir()
    with time_machine.travel(later.replace(hour=3), tick=False):  # the CLI reads the wall clock
        code = cli_main(["backup", "--target", str(target.root), "--keep-days", "3"])
    assert code == 0
    err = capsys.readouterr().err
    assert "interrupted backups removed (no manifest): qpipe-20261112-030000" in err
    assert (target.root / f".qpipe-{later:%Y%m%d}-010000.partial").is_dir()


def test_backup_is_consistent_while_writes_continue(filled: Path, tmp_path: Path) -> None:
    """The snapshot pins one table version: a write during export is not half-included."""
    sources = Sources.from_env()
    comp = snapshot.snapshot_lance_table(sources.lance_path, TABLE, tmp_path)
    from qpipe_dagster.store.lance import LanceStore

    LanceStore(path=sources.lance_path, model=MODEL, dim=DIM).upsert(objects("new", 7, seed=9))
    data = snapshot.read_arrow_file(tmp_path / comp.file)
    assert data.num_rows == comp.rows == 65
    assert snapshot.table_digest(data) == comp.digest


def test_target_urls() -> None:
    env = {"DAGSTER_HOME": "/srv/dh"}
    assert target_from_env(None, env).url == "file:///srv/dh/qpipe/backups"
    assert target_from_url("file:///var/backups/qpipe", env).url == "file:///var/backups/qpipe"
    with pytest.raises(BackupError, match="unsupported scheme 'ftp'"):
        target_from_url("ftp://host/x", env)
    with pytest.raises(BackupError, match="needs R2_KEY, R2_SECRET"):
        target_from_url("r2://bucket/p", {"R2_ACCOUNT_ID": "abc"})
    with pytest.raises(BackupError, match="R2_BUCKET is not"):
        target_from_env(None, {"R2_ACCOUNT_ID": "abc", "R2_KEY": "k", "R2_SECRET": "s"})
    with pytest.raises(BackupError, match="three slashes"):
        target_from_url("file://relative/path", env)
    r2 = target_from_env(
        None, {"R2_ACCOUNT_ID": "abc", "R2_KEY": "k", "R2_SECRET": "s", "R2_BUCKET": "bk"}
    )
    assert r2.url == "s3://bk/qpipe at https://abc.r2.cloudflarestorage.com"


# --- bad input ---------------------------------------------------------------------------------
# Backups and restores fed bad input: damaged manifests, unusable destinations, bad retention.
#
# Each case is refused before anything is written, with a message naming what is wrong.
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
