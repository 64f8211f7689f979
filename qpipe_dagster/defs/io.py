"""IO manager that stores asset outputs (pyarrow Tables) as Arrow IPC parts under DAGSTER_HOME,
or in an S3-compatible bucket when QPIPE_ASSET_URL is set (so runs on several hosts share them)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext
from upath import UPath

from qpipe_dagster.paths import qpipe_home, state_paths
from qpipe_dagster.settings import S3_SCHEMES, SettingError, env_value
from qpipe_dagster.storage.arrow_files import read_table, write_table
from qpipe_dagster.storage.object_tables import asset_root


def asset_storage_dir() -> Path | UPath:
    """QPIPE_ASSET_URL (a bucket), else QPIPE_ASSET_DIR, else DAGSTER_HOME/qpipe/assets."""
    url = env_value("QPIPE_ASSET_URL")
    if url:
        if env_value("QPIPE_ASSET_DIR"):
            raise SettingError(
                "QPIPE_ASSET_URL and QPIPE_ASSET_DIR are both set: asset tables live in one "
                "place; unset one of them"
            )
        return _bucket(url)
    paths = state_paths()
    if env_value("QPIPE_ASSET_DIR") is None:
        qpipe_home()  # the default folder's parent, named when DAGSTER_HOME cannot hold it
    return paths.assets


def asset_location(base: str) -> Path | UPath:
    """A folder, or an s3:// / r2:// URL (credentials from QPIPE_ASSET_S3_* or R2_*) as a UPath."""
    return _bucket(base) if urlsplit(base).scheme in S3_SCHEMES else Path(base)


def _bucket(url: str) -> UPath:
    return asset_root(url, os.environ)  # SettingError names the variable


def partition_folder(
    base_dir: str | None, asset_name: str, partition_key: str | None
) -> Path | UPath:
    """`base/asset/partition`; a key that is not one plain folder name is refused.

    Dagster accepts any partition key, so `../crawled_pages/x` would otherwise read or
    overwrite another asset's files, whichever asset (or future asset) is being stored.
    """
    base = asset_location(base_dir) if base_dir else asset_storage_dir()
    if partition_key is not None and (
        partition_key in ("", ".", "..", "__all__")
        or any(c in partition_key for c in "/\\\0")
        or partition_key != partition_key.strip()
    ):
        raise ValueError(
            f"partition key {partition_key!r} of {asset_name} cannot be stored: a partition key"
            " must be one plain folder name (no '/', '\\', NUL, surrounding spaces, '.' or '..')"
        )
    return base / asset_name / (partition_key or "__all__")


class ArrowIPCIOManager(ConfigurableIOManager):
    """One folder per asset partition, each part an Arrow IPC stream of at most 1 MB."""

    base_dir: str | None = None  # a folder or s3://bucket/prefix; None: asset_storage_dir()

    def _folder(self, context: OutputContext | InputContext) -> Path | UPath:
        partition = context.asset_partition_key if context.has_asset_partitions else None
        return partition_folder(self.base_dir, context.asset_key.path[-1], partition)

    def handle_output(self, context: OutputContext, obj: pa.Table) -> None:
        if not isinstance(obj, pa.Table):
            raise TypeError(f"{context.asset_key.to_user_string()} must return a pyarrow.Table")
        written = write_table(obj, self._folder(context))
        context.add_output_metadata(
            {
                "path": MetadataValue.path(str(written.path)),
                "rows": written.rows,
                "ipc_parts": written.parts,
                "ipc_stream_bytes": MetadataValue.int(written.total_bytes),
                "ipc_max_part_bytes": MetadataValue.int(written.max_part_bytes),
            }
        )

    def load_input(self, context: InputContext) -> pa.Table:
        folder = self._folder(context)
        table = read_table(folder)
        if table is None:
            raise FileNotFoundError(
                f"no stored data for {context.asset_key.to_user_string()} at {folder}: "
                "materialize that asset for this concept first"
            )
        return table
