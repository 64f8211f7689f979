"""Write and read a table as Arrow IPC stream parts, each at most `max_part_bytes` on disk.

Small parts keep every stream cheap to ship (QStash bodies, object-store uploads) and let readers
memory-map one part at a time. A partition's folder is replaced atomically: parts are written to a
temporary folder that is renamed over the old one, so a crash never leaves a half-written table.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

MAX_PART_BYTES = 1_000_000


class StoredTableError(ValueError):
    """A stored table that cannot be read back; the message names the file and what to redo."""


_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


@dataclass(frozen=True)
class WrittenTable:
    path: Path
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
    table: pa.Table, folder: Path, max_part_bytes: int = MAX_PART_BYTES
) -> WrittenTable:
    """Replace `folder` with the table's parts (part-00000.arrows, ...)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.tmp"
    staging.mkdir()
    parts = split_into_parts(table, max_part_bytes)
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


def part_sizes(folder: Path) -> list[int]:
    return [p.stat().st_size for p in sorted(Path(folder).glob("part-*.arrows"))]


def _redo(folder: Path) -> str:
    """What to re-materialize for `folder` (laid out as <asset>/<partition> by the IO manager)."""
    return f"materialize {folder.parent.name} for partition {folder.name!r} again to rewrite it"


def read_table(folder: Path) -> pa.Table | None:
    """The stored table, or None when the partition was never written.

    A truncated or foreign part, or parts that disagree on the schema, raise StoredTableError
    naming the file: pyarrow's own words ("Expected to read 600 metadata bytes") name none.
    """
    folder = Path(folder)
    parts = sorted(folder.glob("part-*.arrows"))
    if not parts:
        return None
    tables = []
    for part in parts:
        try:
            tables.append(pa.ipc.open_stream(part.read_bytes()).read_all())
        except (pa.ArrowException, OSError) as exc:
            raise StoredTableError(
                f"stored table part {part} is unreadable (truncated, damaged or not an Arrow "
                f"IPC stream: {exc}): {_redo(folder)}"
            ) from exc
    for part, table in zip(parts[1:], tables[1:], strict=True):
        if not table.schema.equals(tables[0].schema):
            raise StoredTableError(
                f"stored table part {part} has another schema than {parts[0].name} (parts of "
                f"two different writes?): {_redo(folder)}"
            )
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
