"""Backups to an S3-compatible bucket over real HTTP: moto's S3 server on 127.0.0.1 stands in for
R2/MinIO (same wire protocol, boto3 client unchanged)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from qpipe_dagster.ops.backup import Sources, restore_backup, run_backup
from qpipe_dagster.ops.manifest import BackupError
from qpipe_dagster.ops.targets import S3Target, target_from_url
from qpipe_dagster_tests.ops.helpers import fill_stores

moto_server = pytest.importorskip("moto.server", reason="moto[server] (test extra) not installed")


@pytest.fixture
def s3_env() -> Iterator[dict[str, str]]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "BACKUP_S3_ENDPOINT": f"http://{host}:{port}",
        "BACKUP_S3_KEY": "test-key",
        "BACKUP_S3_SECRET": "test-secret",
        "BACKUP_S3_REGION": "us-east-1",
    }
    try:
        yield env
    finally:
        server.stop()


def test_s3_round_trip_and_refusals(dagster_home: Path, s3_env: dict[str, str]) -> None:
    fill_stores(dagster_home)
    target = target_from_url("s3://qpipe-backups/nightly", s3_env)
    assert isinstance(target, S3Target)
    with pytest.raises(BackupError, match="reaching the bucket failed"):
        target.check()  # bucket does not exist yet
    target._client.create_bucket(Bucket="qpipe-backups")
    target.check()

    sources = Sources.from_env()
    result = run_backup(sources, target)
    assert target.list_ids() == [result.backup_id]
    keys = [o["Key"] for o in target._client.list_objects_v2(Bucket="qpipe-backups")["Contents"]]
    assert f"nightly/{result.backup_id}/manifest.json" in keys

    shutil.rmtree(dagster_home / "qpipe")
    restore_backup(result.backup_id, sources, target)
    from qpipe_dagster.ops import snapshot

    assert snapshot.sqlite_rows(sources.inbox_path, "inbox") == 3

    # corrupt the object in the bucket: refused, nothing written
    key = f"nightly/{result.backup_id}/concepts.sqlite"
    target._client.put_object(Bucket="qpipe-backups", Key=key, Body=b"garbage")
    shutil.rmtree(dagster_home / "qpipe")
    with pytest.raises(BackupError, match=r"checksum mismatch for concepts.sqlite"):
        restore_backup(result.backup_id, sources, target)
    assert not sources.inbox_path.exists()

    target.delete(result.backup_id)
    assert target.list_ids() == []

    # An upload cut off before its manifest: never listed, so retention never reached it.
    # Old: it stayed in the bucket for good. Now the next backup sweeps it once past retention.
    for name in ("inbox.sqlite", "concepts.sqlite"):
        target._client.put_object(
            Bucket="qpipe-backups", Key=f"nightly/qpipe-20200101-030000/{name}", Body=b"x"
        )
    assert target.list_incomplete() == ["qpipe-20200101-030000"]
    assert target.list_ids() == []
    later = run_backup(sources, target, retention_days=7)
    assert later.swept_incomplete == ["qpipe-20200101-030000"]
    assert target.list_incomplete() == []
    assert target.list_ids() == [later.backup_id]
