"""Circuit breakers (pybreaker) whose state is shared by every qpipe process on the host.

The receiver, the sensor, run workers and the metrics exporter are separate processes: a breaker
held in one process's memory would open in a run worker and be invisible to `qpipe doctor`, the
receiver's `/ready` and Prometheus. So the state lives in one small SQLite file
($DAGSTER_HOME/qpipe/breakers.sqlite, WAL): every process trips, reads and resets the same breaker.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pybreaker

from qpipe_dagster.paths import state_paths
from qpipe_dagster.storage.sqlite_wal import enable_wal

FAIL_MAX = 5  # consecutive failures (after retries) that open a breaker
RESET_TIMEOUT_S = 30.0  # how long an open breaker refuses calls before one trial call
STATE_CODES = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS breakers (name TEXT PRIMARY KEY, state TEXT NOT NULL,"
    " fail_counter INTEGER NOT NULL DEFAULT 0, success_counter INTEGER NOT NULL DEFAULT 0,"
    " opened_at REAL, updated_at REAL NOT NULL)"
)


def breaker_db(env: Mapping[str, str] | None = None) -> Path:
    """Where breaker state lives: QPIPE_BREAKER_DB, else $DAGSTER_HOME/qpipe/breakers.sqlite
    (`paths.state_paths`)."""
    return state_paths(env).breakers


class SqliteBreakerStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker's storage interface over one row of the shared SQLite file."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name)
        self.path = path
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute(_SCHEMA)
            db.execute(
                "INSERT OR IGNORE INTO breakers (name, state, updated_at) VALUES (?, ?, ?)",
                (name, pybreaker.STATE_CLOSED, _now()),
            )

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            enable_wal(db)
            self._local.db = db
        return db

    def _get(self, column: str):
        row = self._db().execute(f"SELECT {column} FROM breakers WHERE name = ?", (self.name,))
        found = row.fetchone()
        return None if found is None else found[0]

    def _set(self, assignments: str, *params: object) -> None:
        self._db().execute(
            f"UPDATE breakers SET {assignments}, updated_at = ? WHERE name = ?",
            (*params, _now(), self.name),
        )

    @property
    def state(self) -> str:
        return self._get("state") or pybreaker.STATE_CLOSED

    @state.setter
    def state(self, state: str) -> None:
        self._set("state = ?", state)

    def increment_counter(self) -> None:
        self._set("fail_counter = fail_counter + 1")

    def reset_counter(self) -> None:
        self._set("fail_counter = 0")

    def increment_success_counter(self) -> None:
        self._set("success_counter = success_counter + 1")

    def reset_success_counter(self) -> None:
        self._set("success_counter = 0")

    @property
    def counter(self) -> int:
        return int(self._get("fail_counter") or 0)

    @property
    def success_counter(self) -> int:
        return int(self._get("success_counter") or 0)

    @property
    def opened_at(self) -> datetime | None:
        ts = self._get("opened_at")
        return None if ts is None else datetime.fromtimestamp(ts, UTC)

    @opened_at.setter
    def opened_at(self, datetime: datetime) -> None:  # pybreaker's parameter name
        self._set("opened_at = ?", datetime.timestamp())


def _now() -> float:
    return datetime.now(UTC).timestamp()


_BREAKERS: dict[tuple[str, Path], pybreaker.CircuitBreaker] = {}
_LOCK = threading.Lock()


def breaker(system: str, path: Path | None = None) -> pybreaker.CircuitBreaker:
    """The breaker guarding one outside system ('weaviate', 'postgres', 'qstash'), one object
    per process and state file. `system@target` (e.g. 'postgres@db:5432/qpipe') gives each
    server of a kind its own breaker; reports group them by kind (`by_system`). Errors that are
    the caller's fault are not counted (see `resilience.transient`)."""
    from qpipe_dagster.resilience.transient import is_transient

    path = breaker_db() if path is None else path
    with _LOCK:
        found = _BREAKERS.get((system, path))
        if found is None:
            found = pybreaker.CircuitBreaker(
                fail_max=FAIL_MAX,
                reset_timeout=RESET_TIMEOUT_S,
                exclude=[lambda exc: not is_transient(exc)],
                state_storage=SqliteBreakerStorage(system, path),
                name=system,
                throw_new_error_on_trip=False,  # the call that trips it shows the real error
            )
            _BREAKERS[(system, path)] = found
        return found


@dataclass(frozen=True)
class BreakerState:
    system: str
    state: str  # closed | half-open | open
    fail_counter: int
    opened_at: float | None
    updated_at: float


def read_states(path: Path | None = None) -> dict[str, BreakerState]:
    """Every breaker's stored state (read-only); an absent file means all closed."""
    path = breaker_db() if path is None else path
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute(
            "SELECT name, state, fail_counter, opened_at, updated_at FROM breakers"
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return {}
        raise
    finally:
        db.close()
    return {r[0]: BreakerState(r[0], r[1], int(r[2]), r[3], float(r[4])) for r in rows}


_RANK = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}


def by_system(states: dict[str, BreakerState]) -> dict[str, BreakerState]:
    """One state per kind of system ('postgres@a' and 'postgres@b' are 'postgres'): the worst
    of its breakers (open over half-open over closed), what the alerts and screens show."""
    out: dict[str, BreakerState] = {}
    for name, st in states.items():
        system = name.split("@", 1)[0]
        found = out.get(system)
        if found is None or (_RANK.get(st.state, 0), st.fail_counter) > (
            _RANK.get(found.state, 0),
            found.fail_counter,
        ):
            out[system] = BreakerState(
                system, st.state, st.fail_counter, st.opened_at, st.updated_at
            )
    return out
