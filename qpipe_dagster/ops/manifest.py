"""Backup ids and manifests: what a backup holds, with counts and checksums to verify a restore.

A backup is complete only once its manifest exists (targets write it last), so a crash midway
never leaves something that looks restorable.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
# Lower-case letters, digits and hyphens only: also valid as a Weaviate backup id.
BACKUP_ID_RE = re.compile(r"^qpipe-(\d{8})-(\d{6})(?:-(\d+))?$")


class BackupError(RuntimeError):
    """A backup or restore problem the operator can act on; the message names what and where."""


def new_backup_id(now: datetime, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """`qpipe-YYYYMMDD-HHMMSS` (UTC), with `-N` appended if that second is already taken."""
    base = now.astimezone(UTC).strftime("qpipe-%Y%m%d-%H%M%S")
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def backup_time(backup_id: str) -> datetime:
    """When a backup was taken, read from its id; a malformed id is a BackupError naming it."""
    m = BACKUP_ID_RE.match(backup_id)
    if not m:
        raise BackupError(
            f"{backup_id!r} is not a qpipe backup id (expected qpipe-YYYYMMDD-HHMMSS, as printed "
            "by `qpipe backup`)"
        )
    return datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class Component:
    """One snapshotted thing: a vector collection, the inbox or the concept registry."""

    name: str  # e.g. "lancedb:Chunks_all_minilm_l6_v2_d384", "inbox", "concepts"
    kind: str  # "lancedb" | "sqlite" | "weaviate"
    file: str | None  # file inside the backup (None for Weaviate: its backup backend holds data)
    rows: int
    digest: str  # sha256 over every object, order-independent (see snapshot.py)
    sha256: str | None = None  # of `file`
    bytes: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # per concept / per status


@dataclass
class Manifest:
    backup_id: str
    created_at: str
    backend: str  # vector store backend: "lancedb" | "weaviate"
    components: list[Component]
    format_version: int = FORMAT_VERSION
    qpipe_version: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Parse and check a manifest; any problem is a BackupError naming the file and field."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BackupError(f"{path}: manifest missing: the backup is incomplete") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BackupError(f"{path}: manifest is not readable JSON ({exc})") from None
        try:
            if data["format_version"] != FORMAT_VERSION:
                raise BackupError(
                    f"{path}: manifest format_version {data['format_version']!r} is not "
                    f"supported (this qpipe reads {FORMAT_VERSION})"
                )
            components = [Component(**c) for c in data["components"]]
            manifest = cls(
                backup_id=str(data["backup_id"]),
                created_at=str(data["created_at"]),
                backend=str(data["backend"]),
                components=components,
                format_version=int(data["format_version"]),
                qpipe_version=str(data.get("qpipe_version", "")),
            )
        except BackupError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupError(
                f"{path}: manifest is malformed ({type(exc).__name__}: {exc})"
            ) from None
        backup_time(manifest.backup_id)
        for c in components:
            if c.file is not None and (
                "/" in c.file or "\\" in c.file or c.file.startswith(".") or not c.file
            ):
                raise BackupError(f"{path}: component {c.name!r} names an unsafe file {c.file!r}")
        return manifest
