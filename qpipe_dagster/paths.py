"""Where qpipe keeps its local state: everything lives under DAGSTER_HOME so one folder is the whole install."""

from __future__ import annotations

import os
from pathlib import Path


def dagster_home() -> Path:
    """DAGSTER_HOME, or ./.dagster_home when unset (the same default `make run` uses)."""
    return Path(os.environ.get("DAGSTER_HOME") or ".dagster_home").resolve()


class QpipeHomeError(OSError):
    """DAGSTER_HOME cannot hold qpipe's state; the message names the variable and the path."""


def qpipe_home() -> Path:
    """qpipe's own state (concept registry, vector store, asset files) beside Dagster's."""
    path = dagster_home() / "qpipe"
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
    return qpipe_home() / "trials"


# The JSON Schema of a concept message, shared by the receiver, `qpipe submit` and edge/ tests.
CONCEPT_MESSAGE_SCHEMA = Path(__file__).resolve().parent / "schemas" / "concept_message.schema.json"
