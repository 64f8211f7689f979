"""Where qpipe keeps its local state: everything lives under DAGSTER_HOME so one folder is the whole install.

`state_paths(env)` is the one place the layout ($DAGSTER_HOME/qpipe/...) and its override
variables (QPIPE_ASSET_DIR, QPIPE_LANCE_PATH, QPIPE_INBOX_PATH, QPIPE_BACKUP_DIR,
QPIPE_PUBLISH_LEDGER, QPIPE_BREAKER_DB) are spelled; every module asks it. It computes paths
only; `qpipe_home()` also creates the folder and names DAGSTER_HOME when it cannot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from qpipe_dagster.settings import env_path


@dataclass(frozen=True)
class StatePaths:
    """Every local path qpipe reads or writes, resolved."""

    dagster_home: Path  # DAGSTER_HOME, or ./.dagster_home (the default `make run` uses)
    qpipe: Path  # qpipe's own state beside Dagster's
    assets: Path  # the Arrow IO manager's folder (QPIPE_ASSET_DIR)
    vectors: Path  # the LanceDB store (QPIPE_LANCE_PATH)
    inbox: Path  # the SQLite inbox (QPIPE_INBOX_PATH); QPIPE_INBOX_URL replaces it
    concepts: Path  # the SQLite concept registry; QPIPE_CONCEPTS_URL replaces it
    active_model: Path  # which embedding model `qpipe reembed` activated
    backups: Path  # local backups (QPIPE_BACKUP_DIR)
    publishes: Path  # the QStash publish ledger (QPIPE_PUBLISH_LEDGER)
    breakers: Path  # circuit breaker state (QPIPE_BREAKER_DB)
    trials: Path  # the trial store (`qpipe_dagster.trials.store`)


ACTIVE_MODEL_FILE = "active_model.json"
DAGSTER_HOME_DEFAULT = ".dagster_home"  # DAGSTER_HOME when unset, relative to where qpipe runs


def state_paths(env: Mapping[str, str] | None = None) -> StatePaths:
    """The layout for `env` (default: this process's environment)."""
    home = env_path("DAGSTER_HOME", env) or Path(DAGSTER_HOME_DEFAULT).resolve()
    qpipe = home / "qpipe"
    return StatePaths(
        dagster_home=home,
        qpipe=qpipe,
        assets=env_path("QPIPE_ASSET_DIR", env) or qpipe / "assets",
        vectors=env_path("QPIPE_LANCE_PATH", env) or qpipe / "vectors",
        inbox=env_path("QPIPE_INBOX_PATH", env) or qpipe / "inbox.sqlite",
        concepts=qpipe / "concepts.sqlite",
        active_model=qpipe / ACTIVE_MODEL_FILE,
        backups=env_path("QPIPE_BACKUP_DIR", env) or qpipe / "backups",
        publishes=env_path("QPIPE_PUBLISH_LEDGER", env) or qpipe / "publishes.sqlite",
        breakers=env_path("QPIPE_BREAKER_DB", env) or qpipe / "breakers.sqlite",
        trials=qpipe / "trials",
    )


def state_paths_under(home: Path) -> StatePaths:
    """The default layout under an already chosen DAGSTER_HOME, without the override variables:
    the receiver built with an explicit folder, a backup skipping qpipe's folder in the instance's."""
    return state_paths({"DAGSTER_HOME": str(home)})


def dagster_home(env: Mapping[str, str] | None = None) -> Path:
    """DAGSTER_HOME, or ./.dagster_home when unset (the same default `make run` uses)."""
    return state_paths(env).dagster_home


class QpipeHomeError(OSError):
    """DAGSTER_HOME cannot hold qpipe's state; the message names the variable and the path."""


def qpipe_home(env: Mapping[str, str] | None = None) -> Path:
    """qpipe's own state (concept registry, vector store, asset files) beside Dagster's, created."""
    path = state_paths(env).qpipe
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise QpipeHomeError(
            f"DAGSTER_HOME={str(path.parent)!r}: {str(path)!r} cannot be a directory "
            "(it, or a folder above it, is a file); DAGSTER_HOME must be a directory"
        ) from None
    except OSError as exc:
        raise QpipeHomeError(
            f"DAGSTER_HOME={str(path.parent)!r}: cannot create {str(path)!r} "
            f"({exc.strerror or exc})"
        ) from None
    return path


def trials_home() -> Path:
    """The trial store (`qpipe_dagster.trials.store`): one Parquet file per concept plus the
    status history, under qpipe's state so a backup of DAGSTER_HOME holds it."""
    qpipe_home()
    return state_paths().trials


# The JSON Schema of a concept message, shared by the receiver, `qpipe submit` and edge/ tests.
CONCEPT_MESSAGE_SCHEMA = Path(__file__).resolve().parent / "schemas" / "concept_message.schema.json"
