"""qpipe's own state as plain numbers, read at scrape time (no Dagster import).

Each reader answers one question an operator or an alert asks (how deep is the inbox, how old
is the last backup, how full is each state path) straight from the store, so the numbers are the
stores' own and survive an exporter restart.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar, cast

from qpipe_dagster import paths
from webhook_sensor.inbox import InboxTarget, is_postgres_url
from webhook_sensor.inbox.readonly import query_inbox

T = TypeVar("T")
SYSTEMS = ("weaviate", "postgres", "qstash")  # outside systems with a circuit breaker


@dataclass(frozen=True)
class InboxSummary:
    by_status: dict[str, int] = field(default_factory=dict)  # pending, consumed, ...
    deferred: int = 0  # pending but held back by the daily concept cap
    oldest_pending_age_s: float = 0.0  # of pending messages not held back by the cap
    deliveries_today: int = 0  # QStash deliveries (redeliveries included) since 00:00 UTC


def _day_start(now: float) -> float:
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


def _inbox_queries(run, table: str, mark: str, now: float) -> InboxSummary:
    by_status = {
        str(s): int(n) for s, n in run(f"SELECT status, COUNT(*) FROM {table} GROUP BY status", ())
    }
    deferred, oldest = run(
        f"SELECT SUM(CASE WHEN deferred_day IS NOT NULL THEN 1 ELSE 0 END),"
        f" MIN(CASE WHEN deferred_day IS NULL THEN received_at END)"
        f" FROM {table} WHERE status = 'pending'",
        (),
    )[0]
    today = run(
        f"SELECT COALESCE(SUM(deliveries), 0) FROM {table} WHERE last_delivery_at >= {mark}",
        (_day_start(now),),
    )[0][0]
    return InboxSummary(
        by_status,
        int(deferred or 0),
        max(0.0, now - float(oldest)) if oldest is not None else 0.0,
        int(today or 0),
    )


def inbox_summary(target: InboxTarget, now: float) -> InboxSummary:
    """Counts by status and the oldest pending message's age; an absent inbox is all zeros.

    Reads only (SQLite opened read-only): the exporter must never lock the receiver's writer."""
    return query_inbox(
        target, lambda run, table, ph: _inbox_queries(run, table, ph, now), InboxSummary()
    )


def registry_concepts(path: Path) -> int:
    """Concepts in the registry (0 when it does not exist yet)."""
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return int(db.execute("SELECT COUNT(*) FROM concepts").fetchone()[0])
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    finally:
        db.close()


@dataclass(frozen=True)
class BackupSummary:
    target: str
    count: int
    last_id: str | None
    last_time: float | None  # epoch seconds, from the id
    last_bytes: float | None  # None where the target cannot tell cheaply (S3)


def backup_summary(env: Mapping[str, str]) -> BackupSummary:
    """The newest complete backup on the configured target (complete = has its manifest)."""
    from qpipe_dagster.ops.manifest import backup_time
    from qpipe_dagster.ops.targets import LocalTarget, target_from_env

    target = target_from_env(None, env)
    if isinstance(target, LocalTarget) and not target.root.exists():
        return BackupSummary(target.url, 0, None, None, None)
    ids = target.list_ids()
    if not ids:
        return BackupSummary(target.url, 0, None, None, None)
    last = ids[-1]
    size = None
    if isinstance(target, LocalTarget):
        size = float(tree_bytes(target.root / last))
    return BackupSummary(target.url, len(ids), last, backup_time(last).timestamp(), size)


def state_paths(env: Mapping[str, str]) -> dict[str, Path]:
    """Every local path qpipe writes (`paths.state_paths`), by a short name used as the `path`
    label."""
    from webhook_sensor.settings import inbox_target_from_env

    layout = paths.state_paths(env)
    found: dict[str, Path] = {
        "dagster_home": layout.dagster_home,
        "assets": layout.assets,
        "vectors": layout.vectors,
        "backups": layout.backups,
        "concepts": layout.concepts,
    }
    inbox = inbox_target_from_env(env)
    if not is_postgres_url(inbox):
        found["inbox"] = Path(inbox)
    return {k: v.resolve() for k, v in found.items()}


def tree_bytes(path: Path) -> int:
    """Bytes allocated under a file or folder (links not followed; vanishing files skipped:
    runs write while we count)."""
    with contextlib.suppress(FileNotFoundError):
        st = path.lstat()
        if not path.is_dir() or path.is_symlink():
            return st.st_blocks * 512
    total = 0
    stack = [path]
    while stack:
        folder = stack.pop()
        with (
            contextlib.suppress(FileNotFoundError, NotADirectoryError, PermissionError),
            os.scandir(folder) as entries,
        ):
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    else:
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
    return total


def filesystem_usage(path: Path) -> tuple[int, int] | None:
    """(used, total) bytes of the filesystem holding `path` or its nearest existing parent."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return None
    return usage.used, usage.total


@dataclass(frozen=True)
class GpuDevice:
    index: str
    name: str
    memory_used_bytes: float
    memory_total_bytes: float
    utilization_ratio: float


def gpu_devices(timeout_s: float = 5.0) -> list[GpuDevice]:
    """NVIDIA GPUs through nvidia-smi; none (not an error) where it is absent or finds none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [
                exe,
                "--query-gpu=index,name,memory.used,memory.total,utilization.gpu",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    devices = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue
        with contextlib.suppress(ValueError):
            devices.append(
                GpuDevice(
                    parts[0],
                    parts[1],
                    float(parts[2]) * 2**20,
                    float(parts[3]) * 2**20,
                    float(parts[4]) / 100.0,
                )
            )
    return devices


def host_memory() -> tuple[int, int]:
    """(used, total) bytes of this host's memory, as `free` counts used (total - available)."""
    import psutil

    mem = psutil.virtual_memory()
    return mem.total - mem.available, mem.total


class TtlCache:
    """A value recomputed at most every `ttl_s` seconds: walking the asset folder or listing an
    S3 bucket on every 15 s scrape would cost more than the numbers are worth."""

    def __init__(self, ttl_s: float, clock=time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._values: dict[str, tuple[float, object]] = {}

    def get(self, key: str, compute: Callable[[], T]) -> T:
        hit = self._values.get(key)
        now = self._clock()
        if hit is not None and now - hit[0] < self.ttl_s:
            return cast(T, hit[1])  # stored by this method for this key
        value = compute()
        self._values[key] = (now, value)
        return value
