"""Asset tables on S3 (QPIPE_ASSET_URL) over real HTTP: moto's S3 server on 127.0.0.1 stands in for
AWS/R2/MinIO, s3fs talks to it as it would to them. Covers what a second host relies on: a fresh
process reads what the first wrote, and a write killed mid-upload leaves the last version whole."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from qpipe_dagster.defs.io import asset_storage_dir, partition_folder
from qpipe_dagster.settings import SettingError
from qpipe_dagster.storage import object_tables
from qpipe_dagster.storage.arrow_files import (
    MAX_PART_BYTES,
    StoredTableError,
    part_sizes,
    read_table,
    write_table,
)

moto_server = pytest.importorskip("moto.server", reason="moto[server] (test extra) not installed")
pytest.importorskip("s3fs", reason="s3fs not installed: pip install -c constraints.txt -e .")

BUCKET = "qpipe-assets"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def s3_assets(monkeypatch: pytest.MonkeyPatch, dagster_home: Path) -> Iterator[dict[str, str]]:
    """A bucket on moto's server, QPIPE_ASSET_URL pointing at a prefix in it; yields the env."""
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "QPIPE_ASSET_URL": f"s3://{BUCKET}/team/assets",
        "QPIPE_ASSET_S3_ENDPOINT": f"http://{host}:{port}",
        "QPIPE_ASSET_S3_KEY": "test-key",
        "QPIPE_ASSET_S3_SECRET": "test-secret",
        "QPIPE_ASSET_S3_REGION": "us-east-1",
    }
    boto3.client(
        "s3",
        endpoint_url=env["QPIPE_ASSET_S3_ENDPOINT"],
        aws_access_key_id="test-key",
        aws_secret_access_key="test-secret",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        yield env
    finally:
        server.stop()


def _keys(prefix: str = "") -> list[str]:
    folder = asset_storage_dir()
    folder.fs.invalidate_cache()
    return sorted(
        k.split(f"{BUCKET}/team/assets/", 1)[1]
        for k in folder.fs.find(f"{folder.path}/{prefix}".rstrip("/"))
    )


def _big_table(rows: int = 300, seed: int = 0) -> pa.Table:
    """Incompressible rows of 10 kB: about 3 MB, so several parts of at most 1 MB."""
    rng = __import__("random").Random(seed)
    return pa.table({"i": list(range(rows)), "blob": [rng.randbytes(10_000) for _ in range(rows)]})


def test_round_trip_keeps_part_limit_and_leaves_nothing_local(s3_assets, dagster_home) -> None:
    folder = partition_folder(None, "parsed_pages", "demo")
    assert str(folder) == f"s3://{BUCKET}/team/assets/parsed_pages/demo"
    assert read_table(folder) is None  # never written
    table = _big_table()
    written = write_table(table, folder)
    assert written.parts >= 3 and written.max_part_bytes <= MAX_PART_BYTES
    assert read_table(folder).equals(table)
    sizes = part_sizes(folder)  # what the ipc_parts_under_1mb check reads
    assert len(sizes) == written.parts and max(sizes) <= MAX_PART_BYTES
    keys = _keys("parsed_pages/demo")
    assert keys[0] == "parsed_pages/demo/_table.json" and len(keys) == written.parts + 1

    # a second write replaces the version and removes the replaced one's parts
    small = pa.table({"i": [1, 2]})
    write_table(small, folder)
    assert read_table(folder).equals(small)
    assert len(_keys("parsed_pages/demo")) == 2
    assert not (dagster_home / "qpipe" / "assets").exists()
    from qpipe_dagster.embed.rotation import stored_concepts  # what `qpipe reembed` walks

    assert stored_concepts(asset_storage_dir()) == ["demo"]


def test_partition_key_that_escapes_is_refused_before_any_request(s3_assets) -> None:
    with pytest.raises(ValueError, match=re.escape("partition key '../parsed_pages' of x")):
        partition_folder(None, "x", "../parsed_pages")


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda b: b[: len(b) // 2], "truncated or damaged"),  # an upload cut short
        (lambda b: bytes(len(b)), "not an Arrow IPC stream"),  # same size, not Arrow
    ],
)
def test_damaged_part_is_named_with_what_to_redo(s3_assets, damage, says) -> None:
    folder = partition_folder(None, "parsed_pages", "demo")
    write_table(_big_table(), folder)
    manifest = object_tables.read_manifest(folder)
    key = f"{folder.path}/{manifest['version']}/part-00001.arrows"
    folder.fs.pipe_file(key, damage(folder.fs.cat_file(key)))
    with pytest.raises(StoredTableError) as info:
        read_table(folder)
    message = str(info.value)
    assert f"s3://{key}" in message and says in message
    assert "materialize parsed_pages for partition 'demo' again" in message


def test_missing_part_and_damaged_manifest_are_named(s3_assets) -> None:
    folder = partition_folder(None, "page_embeddings", "demo")
    write_table(_big_table(), folder)
    manifest = object_tables.read_manifest(folder)
    folder.fs.rm(f"{folder.path}/{manifest['version']}/part-00000.arrows")
    with pytest.raises(StoredTableError, match=r"part-00000.arrows is missing \(named by"):
        read_table(folder)
    folder.fs.pipe_file(f"{folder.path}/_table.json", b"{not json")
    with pytest.raises(StoredTableError, match=r"manifest s3://.*/_table.json is unreadable"):
        read_table(folder)
    write_table(pa.table({"i": [7]}), folder)  # a write repairs it
    assert read_table(folder).column("i").to_pylist() == [7]


def test_missing_bucket_is_named_not_mistaken_for_an_empty_partition(s3_assets, monkeypatch):
    monkeypatch.setenv("QPIPE_ASSET_URL", "s3://no-such-bucket/assets")
    folder = partition_folder(None, "parsed_pages", "demo")
    for action in (lambda: read_table(folder), lambda: write_table(pa.table({"i": [1]}), folder)):
        with pytest.raises(object_tables.ObjectStoreError, match="no-such-bucket"):
            action()


def test_settings_errors_name_the_variable(monkeypatch, dagster_home) -> None:
    monkeypatch.setenv("QPIPE_ASSET_URL", "gs://bucket/x")
    with pytest.raises(SettingError, match="QPIPE_ASSET_URL 'gs://bucket/x': unsupported scheme"):
        asset_storage_dir()
    monkeypatch.setenv("QPIPE_ASSET_URL", "r2://bucket/x")
    for var in ("R2_ACCOUNT_ID", "R2_KEY", "R2_SECRET"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SettingError, match="needs R2_ACCOUNT_ID, R2_KEY, R2_SECRET to be set"):
        asset_storage_dir()
    monkeypatch.setenv("QPIPE_ASSET_URL", "s3://bucket/x")
    monkeypatch.setenv("QPIPE_ASSET_DIR", "/tmp/elsewhere")
    with pytest.raises(SettingError, match="QPIPE_ASSET_URL and QPIPE_ASSET_DIR are both set"):
        asset_storage_dir()
    monkeypatch.setenv("QPIPE_ASSET_URL", "  ")  # blank means unset: the local default
    assert asset_storage_dir() == Path("/tmp/elsewhere")
    from qpipe_dagster.settings import FORMATS  # the start-up check refuses the same values

    assert "must be s3://bucket/prefix" in FORMATS["QPIPE_ASSET_URL"]("gs://bucket/x")
    assert "must be s3://bucket/prefix" in FORMATS["QPIPE_ASSET_URL"]("s3:///no-bucket")
    assert FORMATS["QPIPE_ASSET_URL"]("r2://bucket/x") is None


def _run_python(code: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


_TWO_ASSETS = """
    import pyarrow as pa
    from dagster import DagsterInstance, DynamicPartitionsDefinition, asset, materialize
    from qpipe_dagster.defs.io import ArrowIPCIOManager

    parts = DynamicPartitionsDefinition(name="concepts")

    @asset(partitions_def=parts)
    def upstream() -> pa.Table:
        return pa.table({"x": [1, 2, 3]})

    @asset(partitions_def=parts)
    def downstream(upstream: pa.Table) -> pa.Table:
        return upstream.append_column("y", pa.array([v * 10 for v in upstream["x"].to_pylist()]))
"""


def test_second_host_reads_what_the_first_wrote(s3_assets, tmp_path) -> None:
    """Two processes, each with its own DAGSTER_HOME (two hosts): the second materializes only
    `downstream`, whose input the IO manager loads from the bucket the first host wrote."""
    homes = []
    for name in ("host-a", "host-b"):
        (tmp_path / name).mkdir()
        homes.append({"DAGSTER_HOME": str(tmp_path / name)})
    run = (
        _TWO_ASSETS
        + """
    import sys
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("concepts", ["demo"])
        selection = [upstream if sys.argv[1] == "a" else downstream]
        result = materialize([upstream, downstream], partition_key="demo", instance=instance,
                             resources={"io_manager": ArrowIPCIOManager()},
                             selection=selection)
        assert result.success
    print("ok")
    """
    )
    for which, env in zip("ab", homes, strict=True):
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(run), which],
            env={**os.environ, **env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    stored = read_table(partition_folder(None, "downstream", "demo"))
    assert stored.column("y").to_pylist() == [10, 20, 30]
    assert not any((tmp_path / h).joinpath("qpipe").exists() for h in ("host-a", "host-b"))


def test_write_killed_mid_upload_leaves_previous_version_readable(s3_assets) -> None:
    """SIGKILL a writer between its part uploads: readers keep the previous version; the parts
    it left are swept by a later write once older than SWEEP_AFTER_S (clock moved, not slept)."""
    import time_machine

    folder = partition_folder(None, "crawled_pages", "demo")
    previous = pa.table({"i": [1, 2, 3]})
    write_table(previous, folder)
    before = object_tables.read_manifest(folder)

    writer = _run_python(
        """
        import random, pyarrow as pa
        from qpipe_dagster.defs.io import partition_folder
        from qpipe_dagster.storage.arrow_files import write_table
        rng = random.Random(1)
        big = pa.table({"blob": [rng.randbytes(10_000) for _ in range(4000)]})  # ~40 parts
        print("writing", flush=True)
        write_table(big, partition_folder(None, "crawled_pages", "demo"))
        print("finished", flush=True)
        """,
        {},
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill it once its new version has some parts
            new = [k for k in _keys("crawled_pages/demo") if before["version"] not in k]
            if len([k for k in new if k.endswith(".arrows")]) >= 3:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the writer uploaded no parts within 120 s")
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        rest = writer.communicate(timeout=30)[0]
    assert "finished" not in rest, "the writer completed before it was killed"

    assert object_tables.read_manifest(folder) == before
    assert read_table(folder).equals(previous)  # the interrupted write is invisible
    leftover = {k.split("/")[2] for k in _keys("crawled_pages/demo")} - {"_table.json"}
    assert len(leftover) == 2 and before["version"] in leftover

    newer = pa.table({"i": [4]})
    write_table(newer, folder)  # within the grace period: the leftover may be a live writer
    assert before["version"] not in {k.split("/")[2] for k in _keys("crawled_pages/demo")}
    assert len({k.split("/")[2] for k in _keys("crawled_pages/demo")}) == 3
    with time_machine.travel(time.time() + object_tables.SWEEP_AFTER_S + 60, tick=False):
        write_table(newer, folder)
    versions = {k.split("/")[2] for k in _keys("crawled_pages/demo")}
    assert len(versions) == 2 and "_table.json" in versions  # one version and its manifest
    assert read_table(folder).equals(newer)
    assert json.loads(folder.fs.cat_file(f"{folder.path}/_table.json"))["rows"] == 1


@pytest.mark.slow
def test_concept_pipeline_end_to_end_with_assets_on_s3(s3_assets, dagster_home, demo_site) -> None:
    """The real `concept_pipeline` (Scrapy, model, LanceDB, backtest) in a real instance with
    every table in the bucket; a second run reuses every vector, read back from the bucket."""
    from dagster import DagsterInstance

    from qpipe_dagster.definitions import defs
    from qpipe_dagster.demo import register_demo

    base_url, _ = demo_site
    register_demo(base_url)
    job = defs.resolve_job_def("concept_pipeline")
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("concepts", ["demo"])
        first = job.execute_in_process(partition_key="demo", instance=instance)
        assert first.success
        checks = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
        assert all(checks.values()), checks
        second = job.execute_in_process(partition_key="demo", instance=instance)
        assert second.success

    def meta(result, asset: str) -> dict:
        [mat] = result.asset_materializations_for_node(asset)
        return {k: v.value for k, v in mat.metadata.items()}

    assert meta(first, "crawled_pages")["pages_ok"] == 12
    assert meta(first, "parsed_pages")["path"].startswith(f"s3://{BUCKET}/team/assets/")
    emb = meta(second, "page_embeddings")
    assert emb["reused"] == emb["chunks"] > 0 and emb["embedded"] == 0
    assert read_table(partition_folder(None, "parsed_pages", "demo")).num_rows == 12
    stored = {k.split("/")[0] for k in _keys() if k.endswith("/demo/_table.json")}
    assert {"crawled_pages", "parsed_pages", "page_embeddings", "market_prices"} <= stored
    assert not (dagster_home / "qpipe" / "assets").exists()
