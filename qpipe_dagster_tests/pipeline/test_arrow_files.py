"""Asset tables are stored as Arrow IPC parts of at most 1 MB and read back unchanged."""

import os

import pyarrow as pa

from qpipe_dagster.storage.arrow_files import part_sizes, read_table, write_table


def test_small_table_is_one_part(tmp_path) -> None:
    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    written = write_table(table, tmp_path / "t")
    assert written.parts == 1 and written.rows == 3
    assert read_table(tmp_path / "t").equals(table)


def test_large_table_splits_under_limit(tmp_path) -> None:
    # Incompressible bytes so compression cannot hide the size: ~3 MB in 300 rows.
    table = pa.table({"blob": [os.urandom(10_000) for _ in range(300)], "i": list(range(300))})
    written = write_table(table, tmp_path / "t", max_part_bytes=1_000_000)
    assert written.parts >= 3
    assert max(part_sizes(tmp_path / "t")) <= 1_000_000
    assert written.oversized_rows == 0
    assert read_table(tmp_path / "t").equals(table)


def test_rewrite_replaces_old_parts(tmp_path) -> None:
    big = pa.table({"blob": [os.urandom(10_000) for _ in range(300)]})
    write_table(big, tmp_path / "t")
    small = pa.table({"blob": [b"x"]})
    write_table(small, tmp_path / "t")
    assert len(part_sizes(tmp_path / "t")) == 1
    assert read_table(tmp_path / "t").equals(small)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_missing_partition_reads_none(tmp_path) -> None:
    assert read_table(tmp_path / "nothing") is None
