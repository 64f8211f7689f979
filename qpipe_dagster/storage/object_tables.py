"""Arrow IPC tables on object storage (S3, R2, any S3-compatible service) through fsspec/UPath.

An object store has no rename, so the local layout (a folder renamed over the old one) cannot be
replaced atomically there. Instead each write is a new version and one small manifest names it:

    <folder>/_table.json                       {"version": "v-...", "parts": [{"name", "bytes"}]}
    <folder>/v-20261206T093000-1a2b3c4d/part-00000.arrows ...

Parts are uploaded first and the manifest last (one PUT, which S3 applies whole or not at all),
so a write cut off mid-run leaves the previous version readable; its uploaded parts are swept by a
later write once they are older than SWEEP_AFTER_S. The same part-size limit and the same
StoredTableError messages as the local layout apply.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any, cast

from upath import UPath

from qpipe_dagster.storage.errors import StoredTableError, redo_hint
from qpipe_dagster.storage.s3_settings import S3Settings, s3_settings_from_url

MANIFEST = "_table.json"
FORMAT = "qpipe-arrow-parts/1"
# A version directory that is neither current nor the one just replaced is an interrupted write,
# or a concurrent writer still uploading: only past this age is it certainly the former.
SWEEP_AFTER_S = 3600.0


class ObjectStoreError(OSError):
    """The store could not be reached or refused a request; names the URL and the variables."""


def asset_root(url: str, env: Mapping[str, str]) -> UPath:
    """`QPIPE_ASSET_URL` as a UPath on the bucket, signed in with QPIPE_ASSET_S3_* (or R2_*)."""
    settings = s3_settings_from_url(url, env, var_prefix="QPIPE_ASSET_S3_", what="QPIPE_ASSET_URL")
    return root_for(settings)


def root_for(settings: S3Settings) -> UPath:
    path = f"s3://{settings.bucket}/{settings.prefix}".rstrip("/")
    return UPath(path, **settings.fsspec_options())


def _fail(folder: UPath, what: str, exc: BaseException) -> ObjectStoreError:
    return ObjectStoreError(
        f"asset store {folder}: {what} failed ({type(exc).__name__}: {exc}); check that the "
        "bucket exists and QPIPE_ASSET_URL / QPIPE_ASSET_S3_ENDPOINT, _KEY, _SECRET, _REGION"
    )


def _version_name(now: float) -> str:
    return f"v-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{uuid.uuid4().hex[:8]}"


def _version_time(name: str) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(name[2:17], "%Y%m%dT%H%M%S")))
    except ValueError:
        return None


def read_manifest(folder: UPath) -> dict[str, Any] | None:
    """The committed manifest, None when the partition was never (completely) written."""
    fs, key = folder.fs, f"{folder.path}/{MANIFEST}"
    try:
        raw = fs.cat_file(key)
    except FileNotFoundError:
        bucket = folder.path.split("/", 1)[0]
        if not fs.exists(bucket):  # else "materialize it first" would send users the wrong way
            raise ObjectStoreError(
                f"asset store {folder}: bucket {bucket!r} does not exist or these credentials "
                "cannot see it; create it, or fix QPIPE_ASSET_URL / QPIPE_ASSET_S3_*"
            ) from None
        return None
    except OSError as exc:
        raise _fail(folder, f"reading {MANIFEST}", exc) from exc
    try:
        manifest = json.loads(raw)
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT!r}")
        [(str(p["name"]), int(p["bytes"])) for p in manifest["parts"]]
        str(manifest["version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StoredTableError(
            f"stored table manifest {folder / MANIFEST} is unreadable ({exc}): {redo_hint(folder)}"
        ) from exc
    return manifest


def write_parts(folder: UPath, parts: list[bytes], rows: int, now: float | None = None) -> str:
    """Upload `parts` as a new version of `folder`, then commit it; returns the version name."""
    now = time.time() if now is None else now
    fs = folder.fs
    previous = read_manifest_quietly(folder)
    version = _version_name(now)
    base = f"{folder.path}/{version}"
    names = [f"part-{i:05d}.arrows" for i in range(len(parts))]
    try:
        for name, blob in zip(names, parts, strict=True):
            fs.pipe_file(f"{base}/{name}", blob)
    except OSError as exc:
        raise _fail(folder, f"uploading {version}", exc) from exc
    manifest = {
        "format": FORMAT,
        "version": version,
        "rows": rows,
        "written_at": now,
        "parts": [{"name": n, "bytes": len(b)} for n, b in zip(names, parts, strict=True)],
    }
    try:
        fs.pipe_file(f"{folder.path}/{MANIFEST}", json.dumps(manifest).encode())
    except OSError as exc:
        raise _fail(folder, f"committing {MANIFEST}", exc) from exc
    _sweep(folder, keep=version, replaced=previous["version"] if previous else None, now=now)
    return version


def read_manifest_quietly(folder: UPath) -> dict[str, Any] | None:
    """The manifest, or None also when it is damaged: a write replaces it either way."""
    try:
        return read_manifest(folder)
    except StoredTableError:
        return None


def _sweep(folder: UPath, keep: str, replaced: str | None, now: float) -> None:
    """Delete the replaced version and leftovers of interrupted writes; never the new one."""
    fs = folder.fs
    try:
        fs.invalidate_cache(folder.path)
        entries = fs.ls(folder.path, detail=False)
    except OSError:
        return  # the commit stands; leftovers go with a later write
    for entry in entries:
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if not name.startswith("v-") or name == keep:
            continue
        born = _version_time(name)
        if name == replaced or (born is not None and now - born > SWEEP_AFTER_S):
            with contextlib.suppress(OSError):  # tried again by the next write
                fs.rm(f"{folder.path}/{name}", recursive=True)


def read_parts(folder: UPath) -> list[tuple[str, bytes]] | None:
    """(part URL, bytes) of the committed version, None when never written.

    A part missing or shorter than the manifest says raises StoredTableError naming it, unless
    a newer write replaced the version while it was read: then the new version is read.
    """
    for attempt in range(2):
        manifest = read_manifest(folder)
        if manifest is None:
            return None
        base = f"{folder.path}/{manifest['version']}"
        out: list[tuple[str, bytes]] = []
        fault: StoredTableError | None = None
        for part in manifest["parts"]:
            url = str(folder / manifest["version"] / part["name"])
            try:
                blob = cast(bytes, folder.fs.cat_file(f"{base}/{part['name']}"))
            except FileNotFoundError:
                fault = StoredTableError(
                    f"stored table part {url} is missing (named by {MANIFEST}): {redo_hint(folder)}"
                )
                break
            except OSError as exc:
                raise _fail(folder, f"reading {part['name']}", exc) from exc
            if len(blob) != part["bytes"]:
                raise StoredTableError(
                    f"stored table part {url} is unreadable (truncated or damaged: "
                    f"{len(blob)} bytes, {MANIFEST} says {part['bytes']}): {redo_hint(folder)}"
                )
            out.append((url, blob))
        if fault is None:
            return out
        again = read_manifest_quietly(folder)
        if attempt or again is None or again["version"] == manifest["version"]:
            raise fault
    raise AssertionError("unreachable")


def part_sizes(folder: UPath) -> list[int]:
    """Stored sizes of the committed version's parts, as the bucket reports them."""
    manifest = read_manifest_quietly(folder)
    if manifest is None:
        return []
    base = f"{folder.path}/{manifest['version']}"
    try:
        folder.fs.invalidate_cache(base)
        listing = {
            e["name"].rsplit("/", 1)[-1]: int(e["size"]) for e in folder.fs.ls(base, detail=True)
        }
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _fail(folder, "listing parts", exc) from exc
    return [listing[p["name"]] for p in manifest["parts"] if p["name"] in listing]
