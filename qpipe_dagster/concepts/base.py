"""Which concept registry and active-model store this process uses: the one setting is
QPIPE_CONCEPTS_URL (PostgreSQL, shared by every host), else files under $DAGSTER_HOME/qpipe."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from qpipe_dagster.concepts.active_model import ActiveModelStore, FileActiveModel
from qpipe_dagster.concepts.postgres import (
    PostgresActiveModel,
    PostgresConceptRegistry,
    concepts_url_from_env,
)
from qpipe_dagster.concepts.sqlite import ConceptRegistry
from qpipe_dagster.paths import qpipe_home, state_paths


def default_registry(env: Mapping[str, str] | None = None) -> ConceptRegistry:
    """The registry the UI, CLI, sensor and runs share: PostgreSQL when QPIPE_CONCEPTS_URL is
    set, else the SQLite file under $DAGSTER_HOME/qpipe."""
    url = concepts_url_from_env(os.environ if env is None else env)
    if url:
        return PostgresConceptRegistry(url)
    qpipe_home()  # created, or DAGSTER_HOME named when it cannot hold qpipe's state
    return ConceptRegistry(state_paths().concepts)


def active_model_store(env: Mapping[str, str] | None = None) -> ActiveModelStore:
    """Where `qpipe reembed` records the active model: beside the registry in PostgreSQL when
    QPIPE_CONCEPTS_URL is set, else $DAGSTER_HOME/qpipe/active_model.json. `env` (default
    os.environ) lets `qpipe doctor` look at another environment without creating folders."""
    url = concepts_url_from_env(os.environ if env is None else env)
    if env is None and not url:  # names DAGSTER_HOME when it cannot hold qpipe's state
        qpipe_home()
    return active_model_store_at(url, state_paths(env).active_model)


def active_model_store_at(url: str | None, path: Path) -> ActiveModelStore:
    """The store for a registry URL (PostgreSQL) or, without one, the local file `path`; backups
    and restores name their locations directly."""
    return PostgresActiveModel(url) if url else FileActiveModel(path)
