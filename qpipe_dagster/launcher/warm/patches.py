"""Two Dagster costs the warm worker removes for the runs it forks (and only for those).

1. A step waiting for a pool slot (qpipe's `gpu` pool: one backtest at a time) spins a core.
   Dagster 1.13's ``InstanceConcurrencyContext.interval_to_next_pending_claim_check`` returns
   ``min(0, ...)``, never more than 0, so the in-process executor's ``sleep_til_ready`` never
   sleeps between the claim checks it has already scheduled (``_pending_timeouts``). Measured on
   2 cores: about 0.8 CPU s per concept in a burst, spent waiting. Fixed here as intended: the
   time until the next scheduled check, at least 0.
2. Every run's first event creates its SQLite event shard, and Dagster stamps it with alembic,
   which re-reads all of Dagster's migration scripts each time (``ScriptDirectory.from_config``):
   about 1.5 CPU s per run. The scripts are files in site-packages that do not change while the
   worker lives, so one ``ScriptDirectory`` per script location is kept and its revision map is
   read once, before the forks.
"""

from __future__ import annotations

import time
from typing import Any

_applied = False


def pool_wait_interval(self: Any) -> float:
    """Seconds until the earliest scheduled re-check of a pending pool claim (0 when due)."""
    if not self._pending_claims or not self._pending_timeouts:
        return 0.0
    return max(0.0, min(self._pending_timeouts.values()) - time.time())


def apply() -> None:
    """Install both fixes in this process (idempotent) and read the migration scripts once."""
    global _applied
    if _applied:
        return
    from alembic.script import ScriptDirectory
    from dagster._core.execution.plan.instance_concurrency_context import (
        InstanceConcurrencyContext,
    )

    InstanceConcurrencyContext.interval_to_next_pending_claim_check = pool_wait_interval  # type: ignore[method-assign]

    load = ScriptDirectory.from_config
    scripts: dict[tuple[str, str | None], ScriptDirectory] = {}

    def from_config(config: Any) -> ScriptDirectory:
        location = config.get_main_option("script_location")
        if not location:
            return load(config)
        key = (location, config.config_file_name)
        if key not in scripts:
            scripts[key] = load(config)
        return scripts[key]

    ScriptDirectory.from_config = from_config  # type: ignore[method-assign]
    _applied = True
    _read_dagster_migrations()


def _read_dagster_migrations() -> None:
    """Fill the revision maps of Dagster's SQLite storages before any fork."""
    from alembic.script import ScriptDirectory
    from dagster._core.storage.event_log.sqlite import sqlite_event_log
    from dagster._core.storage.runs.sqlite import sqlite_run_storage
    from dagster._core.storage.sql import get_alembic_config

    for module in (sqlite_event_log, sqlite_run_storage):
        ScriptDirectory.from_config(get_alembic_config(module.__file__)).get_current_head()
