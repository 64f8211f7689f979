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
BACKENDS = ("lancedb", "weaviate")
# Component kinds, and the name each must have: "lancedb:<table>", "weaviate:<collection>", or
# one of the SQLite stores (keys of snapshot.SQLITE_TABLES).
SQLITE_COMPONENTS = ("inbox", "concepts")
# Host state beyond the stores (ops/host_state.py): file trees and the instance database.
FILES_COMPONENTS = ("assets", "dagster-sqlite", "weaviate-snapshot")
PGDUMP_COMPONENTS = ("dagster-db",)
# Small shared state as one JSON file each (ops/active_model_backup.py).
JSON_COMPONENTS = ("active-model",)
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
    kind: str  # "lancedb" | "sqlite" | "weaviate" | "files" | "pgdump" | "json"
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
        if not isinstance(data, dict):
            raise BackupError(f"{path}: manifest is malformed (a JSON object is expected)")
        if data.get("format_version") != FORMAT_VERSION:  # first: a newer format may differ below
            raise BackupError(
                f"{path}: manifest format_version {data.get('format_version')!r} is not "
                f"supported (this qpipe reads {FORMAT_VERSION})"
            )
        if not isinstance(data.get("components"), list) or not all(
            isinstance(c, dict) for c in data["components"]
        ):
            raise BackupError(
                f"{path}: manifest is malformed (components must be a list of objects)"
            )
        try:
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
        if manifest.backend not in BACKENDS:
            raise BackupError(
                f"{path}: manifest backend {manifest.backend!r} is not one of {', '.join(BACKENDS)}"
            )
        seen: set[str] = set()
        for i, c in enumerate(components):
            why = component_problem(c)
            if why:
                raise BackupError(f"{path}: components[{i}] ({c.name!r}): {why}")
            if c.name in seen:
                raise BackupError(f"{path}: component {c.name!r} is listed twice")
            seen.add(c.name)
        return manifest


def component_problem(c: Component) -> str | None:
    """Why a manifest entry cannot be restored (wrong type, unknown kind, unsafe file), or None.

    Checked before anything is downloaded or written, so a hand-edited or damaged manifest is
    named instead of failing halfway through a restore.
    """
    if not isinstance(c.name, str) or not c.name:
        return "name must be a non-empty string"
    if not isinstance(c.rows, int) or isinstance(c.rows, bool) or c.rows < 0:
        return f"rows must be a whole number >= 0, got {c.rows!r}"
    if not isinstance(c.digest, str) or not c.digest:
        return f"digest must be a non-empty string, got {c.digest!r}"
    if c.sha256 is not None and not isinstance(c.sha256, str):
        return f"sha256 must be a string, got {c.sha256!r}"
    if not isinstance(c.counts, dict):
        return f"counts must be an object, got {c.counts!r}"
    if c.kind in ("lancedb", "weaviate"):
        prefix, _, rest = c.name.partition(":")
        if prefix != c.kind or not rest:
            return f"a {c.kind} component must be named '{c.kind}:<name>'"
    elif c.kind == "sqlite":
        if c.name not in SQLITE_COMPONENTS:
            return f"a sqlite component must be one of {', '.join(SQLITE_COMPONENTS)}"
    elif c.kind == "files":
        if c.name not in FILES_COMPONENTS:
            return f"a files component must be one of {', '.join(FILES_COMPONENTS)}"
    elif c.kind == "pgdump":
        if c.name not in PGDUMP_COMPONENTS:
            return f"a pgdump component must be one of {', '.join(PGDUMP_COMPONENTS)}"
    elif c.kind == "json":
        if c.name not in JSON_COMPONENTS:
            return f"a json component must be one of {', '.join(JSON_COMPONENTS)}"
    else:
        return (
            f"kind {c.kind!r} is not one of lancedb, sqlite, weaviate, files, pgdump, json (a "
            "newer qpipe's backup?)"
        )
    if c.kind == "weaviate":
        return None if c.file is None else "a weaviate component has no file"
    if not isinstance(c.file, str) or not c.file:
        return f"a {c.kind} component needs a file, got {c.file!r}"
    if (
        "/" in c.file
        or "\\" in c.file
        or "\x00" in c.file
        or c.file.startswith(".")
        or c.file == MANIFEST_NAME
    ):
        return f"names an unsafe file {c.file!r}"
    return None
