"""Where backups go: a local directory (default) or an S3-compatible bucket (AWS, Cloudflare R2,
MinIO) through boto3.

Every target uploads the data files first and the manifest last, and lists only backups that
have a manifest, so an interrupted upload is never mistaken for a backup.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from qpipe_dagster.ops.manifest import BACKUP_ID_RE, MANIFEST_NAME, BackupError, Manifest
from qpipe_dagster.paths import state_paths
from qpipe_dagster.settings import SettingError, env_value, r2_prefix
from qpipe_dagster.storage.s3_settings import s3_settings_from_url


class BackupTarget(Protocol):
    url: str  # printable, never with credentials

    def list_ids(self) -> list[str]:
        """Complete backups (manifest present), oldest first."""
        ...

    def upload(self, backup_id: str, staging: Path) -> None:
        """Store every file of `staging`, the manifest last."""
        ...

    def download(self, backup_id: str, dest: Path) -> Manifest:
        """Fetch the manifest and the files it names into dest; returns the parsed manifest."""
        ...

    def list_incomplete(self) -> list[str]:
        """Ids with data but no manifest (an upload or a delete that was cut off), oldest first."""
        ...

    def delete(self, backup_id: str) -> None:
        """Remove a backup, complete or not."""
        ...


class LocalTarget:
    """Backups as folders `<root>/<backup_id>/`; a backup appears by one atomic rename."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = f"file://{self.root}"

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocker = next((p for p in [self.root, *self.root.parents] if p.is_file()), None)
            why = f"{blocker} is a file, not a folder" if blocker else (exc.strerror or str(exc))
            raise BackupError(
                f"backup directory {str(self.root)!r}: cannot create ({why})"
            ) from None

    def check(self) -> None:
        """Prove backups can be written here (used by `qpipe doctor`); BackupError naming why."""
        self._ensure_root()
        try:
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
        except OSError as exc:
            raise BackupError(
                f"backup directory {str(self.root)!r}: not writable ({exc.strerror or exc})"
            ) from None

    def list_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if BACKUP_ID_RE.match(p.name) and (p / MANIFEST_NAME).is_file()
        )

    def list_incomplete(self) -> list[str]:
        if not self.root.is_dir():
            return []
        ids = set()
        for p in self.root.iterdir():
            name = p.name
            if name.startswith(".") and name.endswith(".partial"):
                name = name[1 : -len(".partial")]  # a copy killed before its rename
            elif (p / MANIFEST_NAME).is_file():
                continue
            if BACKUP_ID_RE.match(name) and p.is_dir():
                ids.add(name)
        # a leftover `.partial` beside a complete backup of the same id is not that backup
        return sorted(ids - set(self.list_ids()))

    def _partial(self, backup_id: str) -> Path:
        return self.root / f".{backup_id}.partial"

    def upload(self, backup_id: str, staging: Path) -> None:
        self._ensure_root()
        partial = self._partial(backup_id)
        final = self.root / backup_id
        if final.exists():
            raise BackupError(f"backup {backup_id} already exists in {self.url}")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            shutil.copytree(staging, partial)
            os.replace(partial, final)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise BackupError(f"cannot write backup {backup_id} to {self.url}: {exc}") from None

    def download(self, backup_id: str, dest: Path) -> Manifest:
        src = self.root / backup_id
        if not (src / MANIFEST_NAME).is_file():
            known = ", ".join(self.list_ids()[-5:]) or "none"
            raise BackupError(f"backup {backup_id} not found in {self.url} (latest: {known})")
        manifest = Manifest.read(src / MANIFEST_NAME)
        shutil.copyfile(src / MANIFEST_NAME, dest / MANIFEST_NAME)
        for c in manifest.components:
            if c.file:
                if not (src / c.file).is_file():
                    raise BackupError(f"backup {backup_id}: file {c.file} is missing in {self.url}")
                shutil.copyfile(src / c.file, dest / c.file)
        return manifest

    def delete(self, backup_id: str) -> None:
        # manifest first: a half-deleted backup must not look complete
        (self.root / backup_id / MANIFEST_NAME).unlink(missing_ok=True)
        shutil.rmtree(self.root / backup_id, ignore_errors=True)
        shutil.rmtree(self._partial(backup_id), ignore_errors=True)


class S3Target:
    """Backups as `s3://bucket/prefix/<backup_id>/<file>` on any S3-compatible service."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        where = f"{endpoint_url or 's3'}/{bucket}"
        self.url = f"s3://{bucket}/{self.prefix}" + (f" at {endpoint_url}" if endpoint_url else "")
        self._where = where
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10),
        )

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _call(self, what: str, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            raise BackupError(f"{self.url}: {what} failed ({code}: {exc})") from None
        except BotoCoreError as exc:
            raise BackupError(f"{self.url}: {what} failed ({exc})") from None

    def _folders(self) -> dict[str, set[str]]:
        """Backup id -> the file names stored under it."""
        folders: dict[str, set[str]] = {}
        token = None
        base = self._key() + "/" if self.prefix else ""
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": base}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("listing backups", self._client.list_objects_v2, **kwargs)
            for obj in page.get("Contents", []):
                rest = obj["Key"][len(base) :].split("/")
                if len(rest) == 2 and BACKUP_ID_RE.match(rest[0]):
                    folders.setdefault(rest[0], set()).add(rest[1])
            token = page.get("NextContinuationToken")
            if not token:
                return folders

    def list_ids(self) -> list[str]:
        return sorted(i for i, names in self._folders().items() if MANIFEST_NAME in names)

    def list_incomplete(self) -> list[str]:
        return sorted(i for i, names in self._folders().items() if MANIFEST_NAME not in names)

    def upload(self, backup_id: str, staging: Path) -> None:
        if backup_id in self.list_ids():
            raise BackupError(f"backup {backup_id} already exists in {self.url}")
        files = sorted(p for p in staging.iterdir() if p.name != MANIFEST_NAME)
        for path in [*files, staging / MANIFEST_NAME]:
            self._call(
                f"uploading {path.name}",
                self._client.upload_file,
                Filename=str(path),
                Bucket=self.bucket,
                Key=self._key(backup_id, path.name),
            )

    def download(self, backup_id: str, dest: Path) -> Manifest:
        if backup_id not in self.list_ids():
            known = ", ".join(self.list_ids()[-5:]) or "none"
            raise BackupError(f"backup {backup_id} not found in {self.url} (latest: {known})")
        for name in [MANIFEST_NAME]:
            self._get(backup_id, name, dest)
        manifest = Manifest.read(dest / MANIFEST_NAME)
        for c in manifest.components:
            if c.file:
                self._get(backup_id, c.file, dest)
        return manifest

    def _get(self, backup_id: str, name: str, dest: Path) -> None:
        self._call(
            f"downloading {backup_id}/{name}",
            self._client.download_file,
            Bucket=self.bucket,
            Key=self._key(backup_id, name),
            Filename=str(dest / name),
        )

    def delete(self, backup_id: str) -> None:
        base = self._key(backup_id) + "/"
        page = self._call(
            "listing a backup", self._client.list_objects_v2, Bucket=self.bucket, Prefix=base
        )
        keys = [o["Key"] for o in page.get("Contents", [])]
        keys.sort(key=lambda k: not k.endswith(MANIFEST_NAME))  # manifest first
        for key in keys:
            self._call(f"deleting {key}", self._client.delete_object, Bucket=self.bucket, Key=key)

    def check(self) -> None:
        """Prove the bucket is reachable with these credentials (used by `qpipe doctor`)."""
        self._call("reaching the bucket", self._client.head_bucket, Bucket=self.bucket)


def default_backup_dir(env: Mapping[str, str]) -> Path:
    """QPIPE_BACKUP_DIR, else $DAGSTER_HOME/qpipe/backups (`paths.state_paths`)."""
    return state_paths(env).backups


def target_from_url(url: str, env: Mapping[str, str] | None = None) -> BackupTarget:
    """`/path`, `file:///path`, `s3://bucket/prefix` or `r2://bucket/prefix` to a target.

    S3: credentials from the usual AWS variables (or BACKUP_S3_KEY/BACKUP_S3_SECRET), endpoint
    from BACKUP_S3_ENDPOINT (MinIO, other providers). R2: R2_ACCOUNT_ID, R2_KEY, R2_SECRET.
    """
    env = os.environ if env is None else env
    url = url.strip()
    if not url:
        raise BackupError("backup target URL is empty")
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        path = parts.path if parts.scheme == "file" else url
        if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
            raise BackupError(f"backup target {url!r}: file URLs need three slashes: file:///path")
        return LocalTarget(Path(path))
    if parts.scheme not in ("s3", "r2"):
        raise BackupError(
            f"backup target {url!r}: unsupported scheme {parts.scheme!r}; use a path, file://, "
            "s3://bucket/prefix or r2://bucket/prefix"
        )
    try:
        s3 = s3_settings_from_url(url, env, var_prefix="BACKUP_S3_", what="backup target")
    except SettingError as exc:
        raise BackupError(str(exc)) from None
    return S3Target(
        s3.bucket,
        s3.prefix,
        endpoint_url=s3.endpoint_url,
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        region=s3.region,
    )


def target_from_env(url: str | None = None, env: Mapping[str, str] | None = None) -> BackupTarget:
    """The explicit URL, else BACKUP_URL, else R2 (R2_BUCKET + R2_*), else the local directory
    QPIPE_BACKUP_DIR (default $DAGSTER_HOME/qpipe/backups)."""
    env = os.environ if env is None else env
    if url:
        return target_from_url(url, env)
    configured = env_value("BACKUP_URL", env)
    if configured:
        return target_from_url(configured, env)
    if env_value("R2_ACCOUNT_ID", env):
        bucket = env_value("R2_BUCKET", env)
        if not bucket:
            raise BackupError("R2_ACCOUNT_ID is set but R2_BUCKET is not: name the backup bucket")
        return target_from_url(f"r2://{bucket}/{r2_prefix(env)}", env)
    return LocalTarget(default_backup_dir(env))
