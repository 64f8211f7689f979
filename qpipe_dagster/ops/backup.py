"""`run_backup`, `restore_backup` and `apply_retention`: the nightly job and the CLI call these.

A backup snapshots everything needed to rebuild the host into a staging folder: the vector
store (LanceDB tables, or Weaviate's snapshot, packed in when its backup module writes to a
folder), the QStash inbox, the concept registry (SQLite or PostgreSQL), the asset tables and
the Dagster instance database (pg_dump, or the local SQLite files; see ops/host_state.py). It writes a manifest (rows, per-concept/per-status counts, file sha256, content digests)
and hands the folder to a target. A restore downloads, checks every checksum and digest before
touching anything, refuses a store that is not empty, writes, then verifies what landed.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from qpipe_dagster.concepts import ActiveModelStore
from qpipe_dagster.concepts.base import active_model_store_at
from qpipe_dagster.ops import active_model_backup, snapshot
from qpipe_dagster.ops.manifest import (
    BackupError,
    Component,
    Manifest,
    backup_time,
    new_backup_id,
    sha256_file,
)
from qpipe_dagster.ops.targets import BackupTarget
from qpipe_dagster.paths import state_paths
from qpipe_dagster.settings import env_path, env_value, weaviate_backup_backend

if TYPE_CHECKING:
    from qpipe_dagster.cli.progress import Meter, MeterFactory

DEFAULT_RETENTION_DAYS = 7


class _NoMeter:
    """What a caller without progress (the nightly asset, tests) gets: nothing is shown."""

    def advance(self, n: int = 1, note: str = "") -> None:
        pass

    def write(self, msg: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _meter(factory: MeterFactory | None, total: int, desc: str) -> Meter | _NoMeter:
    return factory(total=total, desc=desc, unit="component") if factory else _NoMeter()


@dataclass(frozen=True)
class Sources:
    """What to back up / restore into. Weaviate is used when weaviate_url is set."""

    lance_path: Path
    inbox_path: Path
    concepts_path: Path
    inbox_url: str | None = None  # a PostgreSQL inbox is backed up with PostgreSQL's own tools
    weaviate_url: str | None = None
    weaviate_api_key: str | None = None
    weaviate_backend: str = "filesystem"  # Weaviate backup module: filesystem | s3 | gcs | azure
    # Weaviate's BACKUP_FILESYSTEM_PATH as mounted here: its snapshot is packed into the backup
    weaviate_backup_path: Path | None = None
    concepts_url: str | None = None  # QPIPE_CONCEPTS_URL: the PostgreSQL registry
    asset_dir: Path | None = None  # the Arrow IO manager's folder (None: a bucket holds them)
    dagster_home: Path | None = None  # the local instance's SQLite files live here
    dagster_pg: dict[str, str] | None = None  # libpq env of the PostgreSQL instance database
    # the local active-model file; with concepts_url the choice is a table in that database
    active_model_path: Path | None = None

    @property
    def backend(self) -> str:
        return "weaviate" if self.weaviate_url else "lancedb"

    def active_model_store(self) -> ActiveModelStore | None:
        """Where the active-model choice is (`concepts.active_model`), None when not included."""
        if self.concepts_url is None and self.active_model_path is None:
            return None
        return active_model_store_at(self.concepts_url, self.active_model_path or Path())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Sources:
        """The same locations the pipeline, receiver and registry use."""
        from qpipe_dagster.concepts.postgres import concepts_url_from_env
        from qpipe_dagster.ops.host_state import pg_env

        env = os.environ if env is None else env
        layout = state_paths(env)
        return cls(
            lance_path=layout.vectors,
            inbox_path=layout.inbox,
            concepts_path=layout.concepts,
            inbox_url=env_value("QPIPE_INBOX_URL", env),
            weaviate_url=env_value("WEAVIATE_URL", env),
            weaviate_api_key=env_value("WEAVIATE_API_KEY", env),
            weaviate_backend=weaviate_backup_backend(env),
            weaviate_backup_path=env_path("WEAVIATE_BACKUP_PATH", env),
            concepts_url=concepts_url_from_env(env),
            asset_dir=None if env_value("QPIPE_ASSET_URL", env) else layout.assets,
            dagster_home=layout.dagster_home,
            dagster_pg=pg_env(env),
            active_model_path=layout.active_model,
        )


@dataclass
class BackupResult:
    backup_id: str
    target: str
    manifest: Manifest
    deleted_by_retention: list[str] = field(default_factory=list)
    swept_incomplete: list[str] = field(default_factory=list)  # interrupted backups removed


@dataclass
class RestorePlan:
    """What a restore will do (all of it, or with --dry-run only this)."""

    backup_id: str
    steps: list[str]


def _qpipe_version() -> str:
    try:
        from importlib.metadata import version

        return version("qpipe")
    except Exception:  # not installed as a distribution (running from a checkout)
        return "unknown"


def run_backup(
    sources: Sources,
    target: BackupTarget,
    *,
    now: datetime | None = None,
    retention_days: int | None = DEFAULT_RETENTION_DAYS,
    log: Callable[[str], None] = lambda _m: None,
    meter: MeterFactory | None = None,
) -> BackupResult:
    """Snapshot everything, upload it with its manifest, then prune backups past retention.
    `meter` (qpipe_dagster.cli.progress) counts the components written and the upload.

    retention_days None keeps every backup; anything else must be a whole number >= 1 and is
    checked before the snapshot, so a bad value never ends in an error after a backup was
    written (0 used to mean "keep everything" silently, -1 failed only after the upload).
    """
    if retention_days is not None and (
        not isinstance(retention_days, int)
        or isinstance(retention_days, bool)
        or retention_days < 1
    ):
        raise BackupError(
            f"retention must be a whole number of days >= 1 (--keep-days / "
            f"QPIPE_BACKUP_RETENTION_DAYS), got {retention_days!r}; nothing was backed up"
        )
    now = now or datetime.now(UTC)
    backup_id = new_backup_id(now, set(target.list_ids()))
    tables = [] if sources.weaviate_url else snapshot.lance_tables(sources.lance_path)
    host_parts = int(sources.asset_dir is not None) + int(
        sources.dagster_pg is not None or sources.dagster_home is not None
    )
    store_parts = 1 if sources.weaviate_url else len(tables)
    registry_and_inbox = 1 if sources.inbox_url else 2
    choice_store = sources.active_model_store()
    total = store_parts + registry_and_inbox + (choice_store is not None) + host_parts + 1
    with (
        tempfile.TemporaryDirectory(prefix="qpipe-backup-") as tmp,
        _meter(meter, total, "backing up") as counter,
    ):
        staging = Path(tmp)
        components: list[Component] = []
        if sources.weaviate_url:
            from qpipe_dagster.ops.weaviate_backup import create_weaviate_backup

            components.extend(create_weaviate_backup(sources, backup_id, staging, log=log))
            counter.advance(note="weaviate snapshot")
        else:
            for name in tables:
                comp = snapshot.snapshot_lance_table(sources.lance_path, name, staging)
                log(f"{comp.name}: {comp.rows} objects")
                components.append(comp)
                counter.advance(note=f"{comp.name}: {comp.rows} objects")
        concepts_file = sources.concepts_path
        if sources.concepts_url:  # exported to the SQLite registry format: one backup format
            from qpipe_dagster.concepts.postgres import PostgresConceptRegistry

            concepts_file = staging / ".concepts-export.sqlite"
            PostgresConceptRegistry(sources.concepts_url).export_sqlite(concepts_file)
        sqlite_parts = [("concepts", concepts_file)]
        if sources.inbox_url:
            log(
                "inbox: PostgreSQL (QPIPE_INBOX_URL), not included: use pg_dump -t qpipe_inbox_messages"
            )
        else:
            sqlite_parts.insert(0, ("inbox", sources.inbox_path))
        for name, path in sqlite_parts:
            comp = snapshot.snapshot_sqlite(path, name, staging)
            if comp is not None:
                log(f"{name}: {comp.rows} rows")
                components.append(comp)
            counter.advance(note=f"{name}: {comp.rows if comp else 0} rows")
        if sources.concepts_url:
            concepts_file.unlink()
        if choice_store is not None:
            comp = active_model_backup.snapshot_active_model(choice_store, staging)
            if comp is not None:
                components.append(comp)
            counter.advance(
                note=f"{active_model_backup.ACTIVE_MODEL}: {comp.rows if comp else 0} rows"
            )
        host = _host_components(sources, staging, log)
        components.extend(host)
        if host_parts:
            counter.advance(host_parts, note=", ".join(c.name for c in host) or "no host state")
        manifest = Manifest(
            backup_id=backup_id,
            created_at=now.astimezone(UTC).isoformat(),
            backend=sources.backend,
            components=components,
            qpipe_version=_qpipe_version(),
        )
        manifest.write(staging)
        target.upload(backup_id, staging)
        counter.advance(note=f"uploaded to {target.url}")
    if retention_days is None:
        return BackupResult(backup_id, target.url, manifest)
    deleted = apply_retention(target, retention_days, now=now)
    swept = sweep_incomplete(target, retention_days, now=now)
    return BackupResult(backup_id, target.url, manifest, deleted, swept)


def _host_components(
    sources: Sources, staging: Path, log: Callable[[str], None]
) -> list[Component]:
    """Asset tables and the Dagster instance database (pg_dump, or its SQLite files)."""
    from qpipe_dagster.ops import host_state

    out = []
    if sources.asset_dir is not None:
        comp = host_state.snapshot_tree(sources.asset_dir, host_state.ASSETS, staging)
        if comp is not None:
            out.append(comp)
    if sources.dagster_pg is not None:
        out.append(host_state.dump_instance_db(sources.dagster_pg, staging))
    elif sources.dagster_home is not None:
        comp = host_state.snapshot_dagster_sqlite(sources.dagster_home, staging)
        if comp is not None:
            out.append(comp)
    for comp in out:
        log(f"{comp.name}: {comp.rows} {'runs' if comp.kind == 'pgdump' else 'files'}")
    return out


def apply_retention(target: BackupTarget, keep_days: int, *, now: datetime) -> list[str]:
    """Delete backups older than keep_days; the newest backup is always kept."""
    doomed = _past_retention(target.list_ids()[:-1], keep_days, now)
    for backup_id in doomed:
        target.delete(backup_id)
    return doomed


def sweep_incomplete(target: BackupTarget, keep_days: int, *, now: datetime) -> list[str]:
    """Delete what interrupted backups left (no manifest) once older than keep_days.

    A backup killed mid-upload is never listed, so retention never reached it and its files
    stayed for good. Only ones past the retention window go: a backup that began within it may
    still be uploading.
    """
    doomed = _past_retention(target.list_incomplete(), keep_days, now)
    for backup_id in doomed:
        target.delete(backup_id)
    return doomed


def _past_retention(ids: list[str], keep_days: int, now: datetime) -> list[str]:
    if keep_days < 1:
        raise BackupError(f"retention must be at least 1 day, got {keep_days}")
    cutoff = now - timedelta(days=keep_days)
    return [b for b in ids if backup_time(b) < cutoff]


def _verify_files(manifest: Manifest, folder: Path) -> None:
    """Every file's sha256 must match the manifest; otherwise nothing is restored."""
    for c in manifest.components:
        if not c.file:
            continue
        path = folder / c.file
        if not path.is_file():
            raise BackupError(f"backup {manifest.backup_id}: {c.file} is missing")
        got = sha256_file(path)
        if got != c.sha256:
            raise BackupError(
                f"backup {manifest.backup_id}: checksum mismatch for {c.file} ({c.name}): "
                f"manifest says sha256 {c.sha256}, file has {got}; the backup is corrupted and "
                "was not restored (nothing was changed)"
            )


def _sqlite_path(sources: Sources, name: str) -> Path:
    return {"inbox": sources.inbox_path, "concepts": sources.concepts_path}[name]


def _creatable_problem(path: Path, what: str, *, folder: bool) -> str | None:
    """Why `path` cannot be created or replaced by a restore, or None.

    Checked for every destination before the first write, so a bad QPIPE_INBOX_PATH cannot
    leave the vectors restored and the inbox not (a second restore would then refuse the
    non-empty vector store).
    """
    if path.exists():
        if folder and not path.is_dir():
            return f"{what} {path} is a file, not a folder"
        if not folder and path.is_dir():
            return f"{what} {path} is a folder, not a SQLite file"
        probe = path
    else:
        probe = path.parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            return f"{what} {path} cannot be created: {probe} is a file, not a folder"
    if not os.access(probe, os.W_OK):
        return f"{what} {path} is not writable ({probe})"
    return None


def _check_empty(manifest: Manifest, sources: Sources, folder: Path) -> list[str]:
    """Problems that make a destination unusable or non-empty (a restore never merges or
    overwrites): unwritable paths, stores holding rows, files that are not what they should be."""
    from qpipe_dagster.ops import host_state

    problems = []
    for c in manifest.components:
        if c.kind == "sqlite" and c.name == "concepts" and sources.concepts_url:
            from qpipe_dagster.concepts.postgres import PostgresConceptRegistry

            rows = PostgresConceptRegistry(sources.concepts_url).rows()
            if rows:
                problems.append(f"concept registry {_describe_where(c, sources)} holds {rows} rows")
            continue
        if c.kind == "files" and c.name == host_state.ASSETS:
            if sources.asset_dir is None:
                problems.append(
                    "the backup holds asset tables but QPIPE_ASSET_URL (a bucket) is set"
                )
            else:
                problems.extend(
                    host_state.tree_problems(folder / c.file, sources.asset_dir, c, whole=True)  # type: ignore[operator]
                )
            continue
        if c.kind == "files" and c.name == host_state.DAGSTER_SQLITE:
            if sources.dagster_pg is not None:
                problems.append(
                    "the backup holds a SQLite Dagster instance but this install's is PostgreSQL "
                    "(DAGSTER_PG_HOST is set)"
                )
            elif sources.dagster_home is not None:
                problems.extend(
                    host_state.tree_problems(folder / c.file, sources.dagster_home, c, whole=False)  # type: ignore[operator]
                )
            continue
        if c.kind == "json":
            store = sources.active_model_store()
            why = (
                "the backup holds the active model choice but these sources have no place for it"
                if store is None
                else active_model_backup.destination_problem(store)
            )
            if why:
                problems.append(why)
            continue
        if c.kind == "pgdump":
            if sources.dagster_pg is None:
                problems.append(
                    "the backup holds a PostgreSQL Dagster instance database but DAGSTER_PG_HOST "
                    "is unset (a SQLite instance)"
                )
            else:
                problems.extend(host_state.instance_db_problems(sources.dagster_pg))
            continue
        if c.kind == "lancedb":
            table = c.name.split(":", 1)[1]
            why = _creatable_problem(sources.lance_path, "LanceDB path", folder=True)
            if why:
                problems.append(why)
                continue
            try:
                rows = snapshot.lance_rows(sources.lance_path, table)
            except (OSError, RuntimeError, ValueError) as exc:
                problems.append(
                    f"LanceDB table {table} in {sources.lance_path} is unreadable ({exc})"
                )
                continue
            if rows:
                problems.append(
                    f"LanceDB table {table} in {sources.lance_path} holds {rows} objects"
                )
        elif c.kind == "sqlite":
            path = _sqlite_path(sources, c.name)
            why = _creatable_problem(path, c.name, folder=False)
            if why:
                problems.append(why)
                continue
            if not path.exists():
                continue
            try:
                tables = snapshot.sqlite_table_rows(path, c.name)
            except BackupError as exc:
                problems.append(str(exc))
                continue
            own = snapshot.SQLITE_TABLES[c.name][0]
            if tables.get(own):
                problems.append(f"{c.name} {path} holds {tables[own]} rows")
            other = {t: n for t, n in tables.items() if t != own and n}
            if other:
                listed = ", ".join(f"{t} ({n} rows)" for t, n in sorted(other.items()))
                problems.append(
                    f"{c.name} {path} is not an empty {c.name} store: it holds tables {listed}"
                )
    return problems


def restore_backup(
    backup_id: str,
    sources: Sources,
    target: BackupTarget,
    *,
    dry_run: bool = False,
    log: Callable[[str], None] = lambda _m: None,
    meter: MeterFactory | None = None,
) -> RestorePlan:
    """Restore `backup_id` into empty stores and verify counts and digests against its manifest.
    `meter` (qpipe_dagster.cli.progress) counts the components checked, then those written.

    Order: download, verify every checksum and digest, check the stores are empty, and only
    then write; so a corrupted backup or a non-empty store leaves everything untouched.
    """
    backup_time(backup_id)  # a malformed id is named before any download
    with tempfile.TemporaryDirectory(prefix="qpipe-restore-") as tmp:
        folder = Path(tmp)
        manifest = target.download(backup_id, folder)
        if manifest.backup_id != backup_id:
            raise BackupError(
                f"backup {backup_id}: manifest is for {manifest.backup_id}; refusing a mixed-up backup"
            )
        if manifest.backend != sources.backend:
            raise BackupError(
                f"backup {backup_id} holds a {manifest.backend} vector store but this install uses "
                f"{sources.backend} (WEAVIATE_URL {'set' if sources.weaviate_url else 'unset'})"
            )
        _verify_files(manifest, folder)
        tables = {}
        checking = _meter(meter, len(manifest.components), "verifying backup")
        for c in manifest.components:
            if c.kind == "lancedb":
                data = snapshot.read_arrow_file(folder / c.file)  # type: ignore[operator]
                if data.num_rows != c.rows or snapshot.table_digest(data) != c.digest:
                    raise BackupError(
                        f"backup {backup_id}: {c.name} holds {data.num_rows} objects (manifest: "
                        f"{c.rows}) or its content digest differs; refusing to restore it"
                    )
                tables[c.name] = data
            elif c.kind == "sqlite":
                snapshot.verify_sqlite_file(folder / c.file, c)  # type: ignore[operator]
            elif c.kind == "files":
                from qpipe_dagster.ops.host_state import verify_tree_archive

                verify_tree_archive(folder / c.file, c)  # type: ignore[operator]
            elif c.kind == "json":
                active_model_backup.read_active_model(folder / c.file, c)  # type: ignore[operator]
            checking.advance(note=f"{c.name}: checksums match")
        checking.close()
        steps = [_describe(c, sources) for c in manifest.components]
        problems = _check_empty(manifest, sources, folder)
        if sources.weaviate_url:
            from qpipe_dagster.ops.weaviate_backup import weaviate_nonempty

            problems.extend(weaviate_nonempty(sources, manifest))
        if problems:
            raise BackupError(
                "restore needs empty stores it can write, but "
                + "; ".join(problems)
                + ". Move them aside "
                "(or point QPIPE_LANCE_PATH / QPIPE_INBOX_PATH / DAGSTER_HOME at new locations) "
                "and run the restore again; nothing was changed"
            )
        if dry_run:
            return RestorePlan(backup_id, steps)
        with _meter(meter, len(manifest.components), "restoring") as counter:
            _write_components(manifest, sources, folder, tables, log, counter)
        if sources.weaviate_url:
            from qpipe_dagster.ops.weaviate_backup import restore_weaviate_backup

            restore_weaviate_backup(sources, manifest, folder, log=log)
    return RestorePlan(backup_id, steps)


def _write_components(
    manifest: Manifest,
    sources: Sources,
    folder: Path,
    tables: dict,
    log: Callable[[str], None],
    counter: Meter | _NoMeter,
) -> None:
    """Write each verified component into its (empty) store and check what landed."""
    for c in manifest.components:
        if c.kind == "lancedb":
            table = c.name.split(":", 1)[1]
            digest = snapshot.restore_lance_table(sources.lance_path, table, tables[c.name])
            _check_restored(c, snapshot.lance_rows(sources.lance_path, table), digest)
        elif c.kind == "sqlite" and c.name == "concepts" and sources.concepts_url:
            rows, digest = _restore_pg_concepts(folder / c.file, sources.concepts_url, c)  # type: ignore[operator]
            _check_restored(c, rows, digest)
        elif c.kind == "sqlite":
            path = _sqlite_path(sources, c.name)
            rows, digest = snapshot.restore_sqlite(folder / c.file, path, c)  # type: ignore[operator]
            _check_restored(c, rows, digest)
        elif c.kind == "files" and c.name != "weaviate-snapshot":
            from qpipe_dagster.ops import host_state

            root = sources.asset_dir if c.name == host_state.ASSETS else sources.dagster_home
            rows, digest = host_state.restore_tree(folder / c.file, root, c)  # type: ignore[operator, arg-type]
            _check_restored(c, rows, digest)
        elif c.kind == "json":
            store = sources.active_model_store()
            rows, digest = active_model_backup.restore_active_model(folder / c.file, store, c)  # type: ignore[operator, arg-type]
            _check_restored(c, rows, digest)
        elif c.kind == "pgdump":
            from qpipe_dagster.ops.host_state import restore_instance_db

            rows, digest = restore_instance_db(folder / c.file, sources.dagster_pg)  # type: ignore[operator, arg-type]
            _check_restored(c, rows, digest)
        elif c.kind in ("weaviate", "files"):  # Weaviate's backup module restores these
            counter.advance(note=f"{c.name}: after the rest")
            continue
        log(f"restored {c.name}: {c.rows} verified")
        counter.advance(note=f"{c.name}: {c.rows} verified")


def _restore_pg_concepts(file: Path, url: str, c: Component) -> tuple[int, str]:
    """Load the backup's registry (SQLite format) into the PostgreSQL registry; (rows, digest)
    of what landed, computed the same way as the backup's."""
    from qpipe_dagster.concepts.postgres import PostgresConceptRegistry

    registry = PostgresConceptRegistry(url)
    registry.import_sqlite(file)
    with tempfile.TemporaryDirectory(prefix="qpipe-concepts-") as tmp:
        check = Path(tmp) / "restored-registry.sqlite"  # a scratch export to digest
        registry.export_sqlite(check)
        db = sqlite3.connect(check)
        try:
            return snapshot.sqlite_digest(db, *snapshot.SQLITE_TABLES[c.name][:2])
        finally:
            db.close()


def _describe_where(c: Component, sources: Sources) -> str:
    if c.name == "concepts" and sources.concepts_url:
        from qpipe_dagster.concepts.postgres import redact

        return f"{redact(sources.concepts_url)} (QPIPE_CONCEPTS_URL)"
    return str(_sqlite_path(sources, c.name))


def _check_restored(c: Component, rows: int | None, digest: str) -> None:
    if rows != c.rows or digest != c.digest:
        raise BackupError(
            f"{c.name}: after restore the store holds {rows} rows (manifest: {c.rows}) and the "
            "content digest does not match; investigate before using it"
        )


def _describe(c: Component, sources: Sources) -> str:
    if c.kind == "lancedb":
        where = f"LanceDB {sources.lance_path} table {c.name.split(':', 1)[1]}"
    elif c.kind == "sqlite":
        where = _describe_where(c, sources)
    elif c.kind == "files" and c.name == "assets":
        where = f"asset folder {sources.asset_dir} (into it, never replacing it)"
    elif c.kind == "files" and c.name == "dagster-sqlite":
        where = f"Dagster instance files under {sources.dagster_home}"
    elif c.kind == "files":
        where = f"Weaviate's backup folder {sources.weaviate_backup_path}, then Weaviate"
    elif c.kind == "json":
        store = sources.active_model_store()
        where = f"the active model choice ({store.where if store else '?'})"
    elif c.kind == "pgdump":
        from qpipe_dagster.ops.host_state import _where

        where = (
            f"PostgreSQL {_where(sources.dagster_pg)} (pg_restore)" if sources.dagster_pg else "?"
        )
    else:
        where = f"Weaviate {sources.weaviate_url} collection {c.name.split(':', 1)[1]}"
    return f"restore {c.name}: {c.rows} rows into {where}"
