"""Weaviate backend: snapshots through Weaviate's own backup API (the server writes a
consistent snapshot to its backup module: filesystem, S3, GCS or Azure). The qpipe manifest
records per-collection counts and an (id, content_hash) digest to verify a restore.

With the `filesystem` module the snapshot lands in Weaviate's BACKUP_FILESYSTEM_PATH, on the
Weaviate host: qpipe reads that folder where it is mounted into its own container
(WEAVIATE_BACKUP_PATH), packs `<id>/` into the backup (component `weaviate-snapshot`, uploaded
with the rest to the backup target) and removes it from the host; a restore unpacks it there,
has Weaviate restore it, and removes it again. Other modules (s3, gcs, azure) already store
the snapshot off the host.

Needs a running Weaviate with a backup module enabled (docker-compose.yml configures
`backup-filesystem`); the tests skip this path when no server is configured.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from qpipe_dagster.ops.manifest import BackupError, Component, Manifest

if TYPE_CHECKING:
    from qpipe_dagster.ops.backup import Sources

COLLECTION_PREFIX = "Chunks_"


@contextmanager
def _client(sources: Sources) -> Iterator[object]:
    from qpipe_dagster.store.weaviate import _connect

    try:
        client = _connect(sources.weaviate_url, sources.weaviate_api_key, None)  # type: ignore[arg-type]
    except Exception as exc:
        raise BackupError(f"Weaviate {sources.weaviate_url!r} is unreachable: {exc}") from None
    try:
        yield client
    finally:
        client.close()


def _storage(sources: Sources):
    from weaviate.backup.backup import BackupStorage

    try:
        return BackupStorage(sources.weaviate_backend)
    except ValueError:
        raise BackupError(
            f"WEAVIATE_BACKUP_BACKEND={sources.weaviate_backend!r} is not one of "
            f"{[s.value for s in BackupStorage]}"
        ) from None


def _collection_digest(client, name: str) -> tuple[int, str, dict[str, int]]:
    col = client.collections.get(name)
    pairs = []
    concepts: Counter[str] = Counter()
    for obj in col.iterator(return_properties=["content_hash", "concept"]):
        pairs.append(f"{obj.uuid}\x1f{obj.properties.get('content_hash')}")
        concepts[str(obj.properties.get("concept"))] += 1
    h = hashlib.sha256("\n".join(sorted(pairs)).encode())
    return len(pairs), h.hexdigest(), dict(concepts)


def _qpipe_collections(client) -> list[str]:
    return sorted(
        n for n in client.collections.list_all(simple=True) if n.startswith(COLLECTION_PREFIX)
    )


def snapshot_folder(sources: Sources, backup_id: str) -> Path | None:
    """Where the filesystem module writes backup `backup_id`, as seen here; None for modules
    that store snapshots off the host. A filesystem snapshot must be reachable to be packed:
    left on the Weaviate host, it would be lost with the host."""
    if sources.weaviate_backend != "filesystem":
        return None
    if sources.weaviate_backup_path is None:
        raise BackupError(
            "WEAVIATE_BACKUP_BACKEND=filesystem writes the snapshot on the Weaviate host, where "
            "a backup would leave it: mount Weaviate's BACKUP_FILESYSTEM_PATH volume into this "
            "container and set WEAVIATE_BACKUP_PATH to it (the snapshot is then packed into "
            "the backup), or use WEAVIATE_BACKUP_BACKEND=s3; nothing was backed up"
        )
    return sources.weaviate_backup_path / backup_id


def create_weaviate_backup(
    sources: Sources,
    backup_id: str,
    staging: Path,
    *,
    log: Callable[[str], None] = lambda _m: None,
) -> list[Component]:
    """Run a Weaviate backup of every qpipe collection and describe it for the manifest; a
    filesystem snapshot is packed into `staging` and removed from the Weaviate host."""
    from qpipe_dagster.ops.host_state import WEAVIATE_SNAPSHOT, snapshot_tree

    folder = snapshot_folder(sources, backup_id)
    with _client(sources) as client:
        names = _qpipe_collections(client)
        if not names:
            return []
        components = []
        for name in names:
            rows, digest, counts = _collection_digest(client, name)
            components.append(
                Component(f"weaviate:{name}", "weaviate", None, rows, digest, counts=counts)
            )
        result = client.backup.create(  # type: ignore[attr-defined]
            backup_id=backup_id,
            backend=_storage(sources),
            include_collections=names,
            wait_for_completion=True,
        )
        status = str(getattr(result, "status", "")).upper()
        if "SUCCESS" not in status:
            raise BackupError(
                f"Weaviate backup {backup_id} ended {status or 'without a status'}: "
                f"{getattr(result, 'error', '') or 'see the Weaviate logs'}"
            )
    if folder is not None:
        packed = snapshot_tree(folder, WEAVIATE_SNAPSHOT, staging)
        if packed is None:
            raise BackupError(
                f"Weaviate reported backup {backup_id} done but {folder} holds no files: is "
                "WEAVIATE_BACKUP_PATH the folder Weaviate's BACKUP_FILESYSTEM_PATH is mounted at?"
            )
        components.append(packed)
        shutil.rmtree(folder)  # the snapshot's own folder inside the mount, not the mount
        log(f"{WEAVIATE_SNAPSHOT}: {packed.rows} files packed, removed from {folder.parent}")
    return components


def weaviate_nonempty(sources: Sources, manifest: Manifest) -> list[str]:
    """Collections of the backup that already exist (Weaviate refuses to restore over them)."""
    with _client(sources) as client:
        existing = set(client.collections.list_all(simple=True))  # type: ignore[attr-defined]
    return [
        f"Weaviate collection {c.name.split(':', 1)[1]} already exists at {sources.weaviate_url}"
        for c in manifest.components
        if c.kind == "weaviate" and c.name.split(":", 1)[1] in existing
    ]


def restore_weaviate_backup(
    sources: Sources,
    manifest: Manifest,
    downloaded: Path,
    *,
    log: Callable[[str], None] = lambda _m: None,
) -> None:
    """Unpack a packed filesystem snapshot where Weaviate reads it, restore, remove it again."""
    from qpipe_dagster.ops.host_state import WEAVIATE_SNAPSHOT, restore_tree

    names = [c.name.split(":", 1)[1] for c in manifest.components if c.kind == "weaviate"]
    if not names:
        return
    packed = manifest.component(WEAVIATE_SNAPSHOT)
    folder = snapshot_folder(sources, manifest.backup_id) if packed else None
    if packed is not None and folder is not None:
        if folder.exists():
            raise BackupError(f"{folder} exists: remove that old snapshot folder, then restore")
        restore_tree(downloaded / packed.file, folder, packed)  # type: ignore[operator]
    try:
        _restore(sources, manifest, names, log)
    finally:
        if folder is not None and folder.exists():
            shutil.rmtree(folder)


def _restore(
    sources: Sources, manifest: Manifest, names: list[str], log: Callable[[str], None]
) -> None:
    with _client(sources) as client:
        result = client.backup.restore(  # type: ignore[attr-defined]
            backup_id=manifest.backup_id,
            backend=_storage(sources),
            include_collections=names,
            wait_for_completion=True,
        )
        status = str(getattr(result, "status", "")).upper()
        if "SUCCESS" not in status:
            raise BackupError(f"Weaviate restore of {manifest.backup_id} ended {status}")
        for c in manifest.components:
            if c.kind != "weaviate":
                continue
            rows, digest, _ = _collection_digest(client, c.name.split(":", 1)[1])
            if rows != c.rows or digest != c.digest:
                raise BackupError(
                    f"{c.name}: restored {rows} objects (manifest: {c.rows}) or the digest differs"
                )
            log(f"restored {c.name}: {rows} verified")
