"""Consistent snapshots of the local stores, and digests that prove a restore is exact.

LanceDB: each table is read at one committed version (Lance is multi-version, so a concurrent
upsert can never show up half-written) and written as one Arrow IPC file. SQLite (inbox,
concept registry): the online backup API copies a transactionally consistent image even while
the receiver keeps committing. Restores write each table in one commit, so they are all or
nothing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from qpipe_dagster.ops.manifest import BackupError, Component, sha256_file

# SQLite tables worth saving, with the column that orders them and the one counts group by.
SQLITE_TABLES = {"inbox": ("messages", "id", "status"), "concepts": ("concepts", "slug", None)}


# -- LanceDB -----------------------------------------------------------------------------


def table_digest(table: pa.Table) -> str:
    """sha256 over every row and column, independent of row order and chunking.

    Rows are sorted by `id`; each column contributes its name and canonical bytes (vectors as
    raw float32, everything else as JSON), so one flipped bit in any object changes the digest.
    """
    h = hashlib.sha256()
    if table.num_rows and "id" in table.column_names:
        table = table.sort_by("id")
    for name in sorted(table.column_names):
        col = table.column(name).combine_chunks()
        h.update(name.encode() + b"\x00")
        if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
            values = pc.list_flatten(col)
            h.update(np.ascontiguousarray(values.to_numpy(zero_copy_only=False)).tobytes())
            h.update(json.dumps(pc.list_value_length(col).to_pylist()).encode())
        else:
            h.update(json.dumps(col.to_pylist(), default=str, ensure_ascii=False).encode())
    return h.hexdigest()


def concept_counts(table: pa.Table) -> dict[str, int]:
    if "concept" not in table.column_names or table.num_rows == 0:
        return {}
    vc = pc.value_counts(table.column("concept"))
    return {str(v["values"]): int(v["counts"]) for v in vc.to_pylist()}


def lance_tables(path: Path) -> list[str]:
    """Table names in a LanceDB directory ([] when the directory does not exist yet)."""
    if not path.is_dir():
        return []
    import lancedb

    db = lancedb.connect(str(path))
    return sorted(db.list_tables().tables)


def snapshot_lance_table(path: Path, name: str, out_dir: Path) -> Component:
    """Write table `name` at its current committed version to `<name>.arrow` in out_dir."""
    import lancedb

    try:
        table = lancedb.connect(str(path)).open_table(name)
        version = table.version
        table.checkout(version)  # pin: later commits by a running upsert are not seen
        data = table.to_arrow()
    except (OSError, RuntimeError, ValueError) as exc:
        raise BackupError(f"LanceDB {str(path)!r} table {name!r}: cannot read ({exc})") from exc
    file = f"lancedb-{name}.arrow"
    target = out_dir / file
    with pa.OSFile(str(target), "wb") as sink, pa.ipc.new_file(sink, data.schema) as writer:
        writer.write_table(data, max_chunksize=10_000)
    return Component(
        name=f"lancedb:{name}",
        kind="lancedb",
        file=file,
        rows=data.num_rows,
        digest=table_digest(data),
        sha256=sha256_file(target),
        bytes=target.stat().st_size,
        counts=concept_counts(data),
    )


def read_arrow_file(path: Path) -> pa.Table:
    try:
        with pa.memory_map(str(path), "r") as source:
            return pa.ipc.open_file(source).read_all()
    except (OSError, pa.ArrowInvalid) as exc:
        raise BackupError(f"{path}: not a readable Arrow file ({exc})") from None


def lance_rows(path: Path, name: str) -> int | None:
    """Rows in table `name`, or None when there is no such table."""
    if name not in lance_tables(path):
        return None
    import lancedb

    return lancedb.connect(str(path)).open_table(name).count_rows()


def restore_lance_table(path: Path, name: str, data: pa.Table) -> str:
    """Create table `name` from `data` in one commit and return the digest of what was stored.

    The caller has checked the table is absent or empty; an empty one is replaced.
    """
    import lancedb

    reader = pa.RecordBatchReader.from_batches(data.schema, data.to_batches(max_chunksize=10_000))
    try:
        path.mkdir(parents=True, exist_ok=True)
        db = lancedb.connect(str(path))
        mode = "overwrite" if name in lance_tables(path) else "create"
        db.create_table(name, data=reader, schema=data.schema, mode=mode)
        stored = db.open_table(name).to_arrow()
    except (OSError, RuntimeError, ValueError) as exc:
        raise BackupError(f"LanceDB {str(path)!r} table {name!r}: restore failed ({exc})") from exc
    return table_digest(stored)


# -- SQLite ------------------------------------------------------------------------------


def sqlite_digest(db: sqlite3.Connection, table: str, order_by: str) -> tuple[int, str]:
    """(rows, sha256 over every row in key order); blobs are hashed as hex."""
    h = hashlib.sha256()
    n = 0
    for row in db.execute(f"SELECT * FROM {table} ORDER BY {order_by}"):  # constants
        values = [v.hex() if isinstance(v, bytes | memoryview) else v for v in row]
        h.update(json.dumps(values, default=str).encode() + b"\n")
        n += 1
    return n, h.hexdigest()


def _has_table(db: sqlite3.Connection, table: str) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,))
    return row.fetchone() is not None


def sqlite_rows(path: Path, component: str) -> int | None:
    """Rows in the component's table at `path`, or None when the file or table is absent."""
    table = SQLITE_TABLES[component][0]
    if not path.exists():
        return None
    db = sqlite3.connect(path, timeout=30)
    try:
        if not _has_table(db, table):
            return None
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        db.close()


def sqlite_table_rows(path: Path, component: str) -> dict[str, int]:
    """Rows per table (SQLite's own `sqlite_*` tables aside) of an existing file at `path`.

    A restore replaces the whole file, so any table with rows, ours or not, makes it non-empty;
    a file that is not a SQLite database is a BackupError naming it.
    """
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            names = [
                r[0]
                for r in db.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
                )
            ]
            quoted = {n: '"' + n.replace('"', '""') + '"' for n in names}
            return {
                n: db.execute(f"SELECT COUNT(*) FROM {q}").fetchone()[0] for n, q in quoted.items()
            }
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise BackupError(
            f"{component} {str(path)!r} is not a readable SQLite database ({exc}); a restore "
            "would replace it"
        ) from None


def snapshot_sqlite(path: Path, component: str, out_dir: Path) -> Component | None:
    """Copy the SQLite file with the online backup API; None when it does not exist yet."""
    table, order_by, group_by = SQLITE_TABLES[component]
    if not path.exists():
        return None
    file = f"{component}.sqlite"
    target = out_dir / file
    try:
        src = sqlite3.connect(path, timeout=30)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # one consistent read transaction, even while writers commit
            dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
            if not _has_table(dst, table):
                return None
            rows, digest = sqlite_digest(dst, table, order_by)
            counts: dict[str, int] = {}
            if group_by:
                counts = dict(
                    dst.execute(f"SELECT {group_by}, COUNT(*) FROM {table} GROUP BY {group_by}")
                )
        finally:
            dst.close()
            src.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{component} {str(path)!r}: cannot snapshot ({exc})") from exc
    return Component(
        name=component,
        kind="sqlite",
        file=file,
        rows=rows,
        digest=digest,
        sha256=sha256_file(target),
        bytes=target.stat().st_size,
        counts=dict(Counter(counts)),
    )


def verify_sqlite_file(path: Path, component: Component) -> None:
    """Check a downloaded SQLite snapshot against its manifest entry (rows and digest)."""
    table, order_by, _ = SQLITE_TABLES[component.name]
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows, digest = sqlite_digest(db, table, order_by)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise BackupError(
            f"{component.name}: snapshot {path} is not a readable SQLite file ({exc})"
        ) from None
    if rows != component.rows or digest != component.digest:
        raise BackupError(
            f"{component.name}: snapshot holds {rows} rows (manifest: {component.rows}) and its "
            "content digest does not match the manifest; refusing to restore it"
        )


def restore_sqlite(snapshot: Path, target: Path, component: Component) -> tuple[int, str]:
    """Copy the snapshot into `target` (absent or empty) and return its (rows, digest)."""
    table, order_by, _ = SQLITE_TABLES[component.name]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        src = sqlite3.connect(f"file:{snapshot}?mode=ro", uri=True)
        dst = sqlite3.connect(target, timeout=30)
        try:
            src.backup(dst)  # replaces target's pages in one transaction
            dst.execute("PRAGMA journal_mode=WAL")  # what the inbox and registry run with
            return sqlite_digest(dst, table, order_by)
        finally:
            dst.close()
            src.close()
    except (sqlite3.Error, OSError) as exc:
        raise BackupError(f"{component.name} {str(target)!r}: restore failed ({exc})") from exc
