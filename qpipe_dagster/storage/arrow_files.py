"""Write and read a table as Arrow IPC stream parts, each at most `max_part_bytes` on disk.

Small parts keep every stream cheap to ship (QStash bodies, object-store uploads) and let readers
memory-map one part at a time. A partition's folder is replaced atomically: parts are written to a
temporary folder that is renamed over the old one, so a crash never leaves a half-written table.
A folder that is a UPath on object storage (QPIPE_ASSET_URL) goes to `object_tables`, which keeps
the same guarantees with a manifest written last instead of a rename.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from upath import UPath

from qpipe_dagster.storage import object_tables
from qpipe_dagster.storage.errors import StoredTableError, redo_hint

TableFolder = Path | UPath  # a local folder, or a UPath on object storage (QPIPE_ASSET_URL)

MAX_PART_BYTES = 1_000_000


_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


@dataclass(frozen=True)
class WrittenTable:
    path: TableFolder
    rows: int
    parts: int
    total_bytes: int
    max_part_bytes: int
    oversized_rows: int  # single rows that alone exceed the part limit


def _serialize(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_WRITE_OPTIONS) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def split_into_parts(table: pa.Table, max_part_bytes: int = MAX_PART_BYTES) -> list[bytes]:
    """Serialize `table` into IPC streams no larger than max_part_bytes where rows allow it."""
    blob = _serialize(table)
    if len(blob) <= max_part_bytes or table.num_rows <= 1:
        return [blob]
    pieces = max(2, math.ceil(len(blob) / max_part_bytes * 1.1))
    step = math.ceil(table.num_rows / pieces)
    parts: list[bytes] = []
    for start in range(0, table.num_rows, step):
        parts.extend(split_into_parts(table.slice(start, step), max_part_bytes))
    return parts


def write_table(
    table: pa.Table, folder: TableFolder, max_part_bytes: int = MAX_PART_BYTES
) -> WrittenTable:
    """Replace `folder` with the table's parts (part-00000.arrows, ...)."""
    parts = split_into_parts(table, max_part_bytes)
    if not isinstance(folder, Path):
        object_tables.write_parts(folder, parts, table.num_rows)
    else:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.tmp"
        staging.mkdir()
        for i, blob in enumerate(parts):
            (staging / f"part-{i:05d}.arrows").write_bytes(blob)
        old = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.old"
        if folder.exists():
            os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old, ignore_errors=True)
    sizes = [len(p) for p in parts]
    return WrittenTable(
        path=folder,
        rows=table.num_rows,
        parts=len(parts),
        total_bytes=sum(sizes),
        max_part_bytes=max(sizes),
        oversized_rows=sum(1 for s in sizes if s > max_part_bytes),
    )


def part_sizes(folder: TableFolder) -> list[int]:
    if not isinstance(folder, Path):
        return object_tables.part_sizes(folder)
    return [p.stat().st_size for p in sorted(Path(folder).glob("part-*.arrows"))]


def read_table(folder: TableFolder) -> pa.Table | None:
    """The stored table, or None when the partition was never written.

    A truncated or foreign part, or parts that disagree on the schema, raise StoredTableError
    naming the file: pyarrow's own words ("Expected to read 600 metadata bytes") name none.
    """
    if not isinstance(folder, Path):
        stored = object_tables.read_parts(folder)
        if stored is None:
            return None
        names: list = [url for url, _ in stored]
        loaders = [lambda blob=blob: blob for _, blob in stored]
    else:
        found = sorted(folder.glob("part-*.arrows"))
        if not found:
            return None
        names, loaders = found, [p.read_bytes for p in found]
    return _decode(folder, names, loaders)


def _decode(folder: TableFolder, parts: list, loaders: list[Callable[[], bytes]]) -> pa.Table:
    """The parts as one table; a damaged part or a schema split raises naming the part."""
    tables = []
    for part, load in zip(parts, loaders, strict=True):
        try:
            tables.append(pa.ipc.open_stream(load()).read_all())
        except (pa.ArrowException, OSError) as exc:
            raise StoredTableError(
                f"stored table part {part} is unreadable (truncated, damaged or not an Arrow "
                f"IPC stream: {exc}): {redo_hint(folder)}"
            ) from exc
    for part, table in zip(parts[1:], tables[1:], strict=True):
        if not table.schema.equals(tables[0].schema):
            first = str(parts[0]).rsplit("/", 1)[-1]
            raise StoredTableError(
                f"stored table part {part} has another schema than {first} (parts of "
                f"two different writes?): {redo_hint(folder)}"
            )
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
