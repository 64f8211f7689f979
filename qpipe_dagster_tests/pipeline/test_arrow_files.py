"""Asset tables are stored as Arrow IPC parts of at most 1 MB and read back unchanged."""

import os

import pyarrow as pa
import pytest

from qpipe_dagster.storage.arrow_files import StoredTableError, part_sizes, read_table, write_table


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


def _two_part_folder(tmp_path):
    table = pa.table({"blob": [os.urandom(10_000) for _ in range(300)]})
    write_table(table, tmp_path / "parsed_pages" / "demo")
    return tmp_path / "parsed_pages" / "demo"


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated mid-write
        lambda b: b"",  # an empty file
        lambda b: b"not an arrow stream at all",  # garbage
    ],
)
def test_damaged_part_is_named_with_what_to_redo(tmp_path, damage) -> None:
    """Old code: pyarrow's 'Expected to read 600 metadata bytes, but only read 300', naming no
    file, reached the run's step failure."""
    folder = _two_part_folder(tmp_path)
    part = folder / "part-00001.arrows"
    part.write_bytes(damage(part.read_bytes()))
    with pytest.raises(StoredTableError) as info:
        read_table(folder)
    message = str(info.value)
    assert str(part) in message and "unreadable" in message
    assert "materialize parsed_pages for partition 'demo' again" in message


def test_parts_of_two_schemas_are_named(tmp_path) -> None:
    folder = _two_part_folder(tmp_path)
    other = tmp_path / "other"
    write_table(pa.table({"x": [1]}), other)
    (other / "part-00000.arrows").replace(folder / "part-00001.arrows")
    with pytest.raises(StoredTableError, match=r"part-00001.arrows has another schema"):
        read_table(folder)


@pytest.mark.parametrize(
    "key", ["../crawled_pages/victim", "a/b", "..", ".", "x\\y", " pad", "__all__"]
)
def test_partition_key_that_is_not_one_folder_is_refused(tmp_path, key) -> None:
    """Old code joined any key onto the asset folder: `../crawled_pages/victim` reached
    another asset's files, for every asset stored by the IO manager (prices, backtests too)."""
    from qpipe_dagster.defs.io import partition_folder

    with pytest.raises(ValueError, match="must be one plain folder name") as info:
        partition_folder(str(tmp_path), "backtest_results", key)
    assert repr(key) in str(info.value) and "backtest_results" in str(info.value)
    assert partition_folder(str(tmp_path), "backtest_results", "btc-halving") == (
        tmp_path / "backtest_results" / "btc-halving"
    )


def test_io_manager_refuses_an_escaping_partition_key(tmp_path) -> None:
    """A real materialization: nothing is written outside the asset's own folder."""
    from dagster import DynamicPartitionsDefinition, asset, instance_for_test, materialize

    from qpipe_dagster.defs.io import ArrowIPCIOManager

    parts = DynamicPartitionsDefinition(name="keys")

    @asset(partitions_def=parts)
    def stored() -> pa.Table:
        return pa.table({"a": [1]})

    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        instance.add_dynamic_partitions("keys", ["../elsewhere"])
        result = materialize(
            [stored],
            partition_key="../elsewhere",
            instance=instance,
            resources={"io_manager": ArrowIPCIOManager(base_dir=str(tmp_path / "assets"))},
            raise_on_error=False,
        )
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    assert "partition key '../elsewhere' of stored cannot be stored" in error.cause.message
    assert not (tmp_path / "assets" / "elsewhere").exists()
