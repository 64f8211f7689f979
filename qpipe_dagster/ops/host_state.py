"""Backup components for the rest of a host's state: file trees and the Dagster instance database.

- `files`: a tar of a folder's files (the Arrow IO manager's asset tables; the SQLite files of a
  local Dagster instance; a Weaviate filesystem snapshot). Digest: sha256 over (path, sha256)
  of every file. A restore writes *into* the folder: it never renames, replaces or removes the
  folder itself, which in production is a volume's mount point.
- `pgdump`: `pg_dump --format=custom` of the PostgreSQL instance database (qpipe's own tables
  `qpipe_*` excluded: they are components of their own), restored with `pg_restore` into an
  empty database; verified by the run ids and statuses it holds.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from qpipe_dagster.ops.manifest import (
    FILES_COMPONENTS,
    PGDUMP_COMPONENTS,
    BackupError,
    Component,
    sha256_file,
)
from qpipe_dagster.paths import state_paths_under
from qpipe_dagster.settings import dagster_postgres

ASSETS, DAGSTER_SQLITE, WEAVIATE_SNAPSHOT = FILES_COMPONENTS
(DAGSTER_DB,) = PGDUMP_COMPONENTS


# -- file trees ------------------------------------------------------------------------------


def _files(root: Path, skip_top: Iterable[str] = ()) -> list[str]:
    """Relative POSIX paths of the regular files under `root` (sorted; hidden top-level entries
    and `skip_top` left out: `.aside-*` folders hold what an operator moved out of the way)."""
    skip = set(skip_top)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in skip]
            filenames = [f for f in filenames if not f.startswith(".") and f not in skip]
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                out.append((rel_dir / name).as_posix())
    return sorted(out)


def tree_digest(root: Path, paths: Iterable[str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(paths):
        h.update(f"{rel}\t{sha256_file(root / rel)}\n".encode())
    return h.hexdigest()


def snapshot_tree(
    root: Path, name: str, staging: Path, *, skip_top: Iterable[str] = ()
) -> Component | None:
    """Tar every file under `root` into staging/<name>.tar; None when there is no file."""
    if not root.is_dir():
        return None
    paths = _files(root, skip_top)
    if not paths:
        return None
    file = f"{name}.tar"
    with tarfile.open(staging / file, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel in paths:
            tar.add(root / rel, arcname=rel, recursive=False)
    counts = Counter(rel.split("/", 1)[0] if "/" in rel else "." for rel in paths)
    return Component(
        name=name,
        kind="files",
        file=file,
        rows=len(paths),
        digest=tree_digest(root, paths),
        sha256=sha256_file(staging / file),
        bytes=(staging / file).stat().st_size,
        counts=dict(counts),
    )


def _members(archive: Path, component: Component) -> list[tarfile.TarInfo]:
    """The archive's files, refusing anything but plain files at safe relative paths."""
    try:
        with tarfile.open(archive, "r") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError) as exc:
        raise BackupError(
            f"{component.name}: {archive.name} is not a readable tar ({exc})"
        ) from None
    for m in members:
        parts = PurePosixPath(m.name).parts
        if not m.isfile() or m.name.startswith("/") or ".." in parts or not parts:
            raise BackupError(
                f"{component.name}: {archive.name} holds {m.name!r}, which is not a plain file "
                "at a relative path; refusing to restore it"
            )
    return members


def verify_tree_archive(archive: Path, component: Component) -> None:
    """Rows and digest of the archive against the manifest, before anything is written."""
    members = _members(archive, component)
    with tempfile.TemporaryDirectory(prefix="qpipe-verify-") as tmp:
        _extract(archive, members, Path(tmp))
        got = tree_digest(Path(tmp), [m.name for m in members])
    if len(members) != component.rows or got != component.digest:
        raise BackupError(
            f"{component.name}: archive holds {len(members)} files (manifest: {component.rows}) "
            "or its content digest differs; refusing to restore it"
        )


def _extract(archive: Path, members: list[tarfile.TarInfo], root: Path) -> None:
    with tarfile.open(archive, "r") as tar:
        for m in members:
            dest = root / m.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            if src is None:  # checked in _members; a plain file always has data
                raise BackupError(f"{archive.name}: {m.name} has no data")
            tmp = dest.with_name(f".{dest.name}.restoring")
            with src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)
            os.replace(tmp, dest)  # a file inside root: root itself is never renamed


def tree_problems(archive: Path, root: Path, component: Component, *, whole: bool) -> list[str]:
    """Why `root` cannot take the archive: a file of it exists (or, `whole`, any file does)."""
    if root.exists() and not root.is_dir():
        return [f"{component.name} folder {root} is a file"]
    if not root.exists():
        return []
    if whole:
        present = _files(root)
        if present:
            return [
                f"{component.name} folder {root} holds {len(present)} files (e.g. {present[0]})"
            ]
        return []
    taken = [m.name for m in _members(archive, component) if (root / m.name).exists()]
    if taken:
        return [
            f"{component.name}: {root / taken[0]} exists ({len(taken)} of the backup's files do)"
        ]
    return []


def restore_tree(archive: Path, root: Path, component: Component) -> tuple[int, str]:
    """Write the archive's files into `root` (created if absent, never replaced): (files, digest)."""
    members = _members(archive, component)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _extract(archive, members, root)
    except OSError as exc:
        raise BackupError(f"{component.name} {root}: restore failed ({exc})") from exc
    names = [m.name for m in members]
    return len(names), tree_digest(root, names)


# -- the local (SQLite) Dagster instance -------------------------------------------------------


def snapshot_dagster_sqlite(home: Path, staging: Path) -> Component | None:
    """The instance's SQLite files under DAGSTER_HOME (runs, event logs, schedules), each copied
    with SQLite's online backup API so a running daemon cannot tear them; qpipe's own folder
    (`qpipe/`, its own components) is left out."""
    own = state_paths_under(home).qpipe.name
    dbs = [p for p in _files(home, skip_top=(own,)) if p.endswith(".db")]
    if not dbs:
        return None
    with tempfile.TemporaryDirectory(prefix="qpipe-dagster-db-") as tmp:
        copy = Path(tmp)
        for rel in dbs:
            dest = copy / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                src = sqlite3.connect(f"file:{home / rel}?mode=ro", uri=True, timeout=30)
                dst = sqlite3.connect(dest)
                try:
                    src.backup(dst)
                    dst.execute("PRAGMA journal_mode=DELETE")
                finally:
                    dst.close()
                    src.close()
            except sqlite3.Error as exc:
                raise BackupError(
                    f"Dagster instance file {home / rel}: cannot copy ({exc})"
                ) from exc
        return snapshot_tree(copy, DAGSTER_SQLITE, staging)


# -- the PostgreSQL Dagster instance ---------------------------------------------------------


def pg_env(env: Mapping[str, str]) -> dict[str, str] | None:
    """libpq variables for the instance database (DAGSTER_PG_*, read by `settings`), or None for
    a SQLite instance. The password travels in PGPASSWORD, never on a command line."""
    pg = dagster_postgres(env)
    if pg is None:
        return None
    return {
        "PGHOST": pg.host,
        "PGPORT": str(pg.port),
        "PGUSER": pg.user,
        "PGPASSWORD": pg.password,
        "PGDATABASE": pg.dbname,
        "PGCONNECT_TIMEOUT": "10",
    }


def _where(pg: Mapping[str, str]) -> str:
    return f"{pg['PGUSER']}@{pg['PGHOST']}:{pg['PGPORT']}/{pg['PGDATABASE']}"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    raise BackupError(
        f"{name} not found: the PostgreSQL instance database is backed up with pg_dump and "
        "restored with pg_restore (Debian: apt-get install postgresql-client, at least the "
        "server's major version)"
    )


def _run(cmd: list[str], pg: Mapping[str, str], what: str) -> None:
    proc = subprocess.run(
        cmd, env={**os.environ, **pg}, capture_output=True, text=True, timeout=3600
    )
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise BackupError(f"{what} of {_where(pg)} failed: {' | '.join(detail[-3:])}")


def _connect(pg: Mapping[str, str]):
    import psycopg2

    try:
        return psycopg2.connect(
            host=pg["PGHOST"], port=pg["PGPORT"], user=pg["PGUSER"],
            password=pg["PGPASSWORD"], dbname=pg["PGDATABASE"], connect_timeout=10,
        )  # fmt: skip
    except psycopg2.Error as exc:
        raise BackupError(f"Dagster instance database {_where(pg)}: {exc}".strip()) from None


def instance_runs(pg: Mapping[str, str]) -> tuple[int, str, dict[str, int]]:
    """(runs, digest over run_id and status, runs per status) of the instance database."""
    conn = _connect(pg)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('public.runs') IS NOT NULL")
            (has_runs,) = cur.fetchone() or (False,)  # one row
            if not has_runs:
                return 0, hashlib.sha256(b"").hexdigest(), {}
            cur.execute("SELECT run_id, status FROM runs ORDER BY run_id")
            rows = cur.fetchall()
    finally:
        conn.close()
    h = hashlib.sha256()
    for run_id, status in rows:
        h.update(json.dumps([run_id, status]).encode() + b"\n")
    return len(rows), h.hexdigest(), dict(Counter(status for _, status in rows))


def dump_instance_db(pg: Mapping[str, str], staging: Path) -> Component:
    file = f"{DAGSTER_DB}.pgdump"
    rows, digest, counts = instance_runs(pg)
    _run(
        [_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
         "--exclude-table=qpipe_*", f"--file={staging / file}"],
        pg, "pg_dump",
    )  # fmt: skip
    return Component(
        name=DAGSTER_DB,
        kind="pgdump",
        file=file,
        rows=rows,
        digest=digest,
        sha256=sha256_file(staging / file),
        bytes=(staging / file).stat().st_size,
        counts=counts,
    )


def instance_db_problems(pg: Mapping[str, str]) -> list[str]:
    """A restore needs an empty database: tables other than qpipe's own mean it is in use."""
    conn = _connect(pg)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                " AND table_name NOT LIKE 'qpipe\\_%' ORDER BY table_name"
            )
            tables = [r[0] for r in cur.fetchall()]
    finally:
        conn.close()
    if tables:
        return [
            f"Dagster instance database {_where(pg)} is not empty ({len(tables)} tables, e.g. "
            f"{tables[0]}): stop every Dagster service and restore into a new database"
        ]
    return []


def restore_instance_db(dump: Path, pg: Mapping[str, str]) -> tuple[int, str]:
    _run(
        [_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
         f"--dbname={pg['PGDATABASE']}", str(dump)],
        pg, "pg_restore",
    )  # fmt: skip
    rows, digest, _ = instance_runs(pg)
    return rows, digest
