"""Which concept registry this process uses: the one setting is QPIPE_CONCEPTS_URL."""

from __future__ import annotations

import os
from collections.abc import Mapping

from qpipe_dagster.concepts.postgres import PostgresConceptRegistry, concepts_url_from_env
from qpipe_dagster.concepts.sqlite import ConceptRegistry
from qpipe_dagster.paths import qpipe_home


def default_registry(env: Mapping[str, str] | None = None) -> ConceptRegistry:
    """The registry the UI, CLI, sensor and runs share: PostgreSQL when QPIPE_CONCEPTS_URL is
    set, else the SQLite file under $DAGSTER_HOME/qpipe."""
    url = concepts_url_from_env(os.environ if env is None else env)
    if url:
        return PostgresConceptRegistry(url)
    return ConceptRegistry(qpipe_home() / "concepts.sqlite")
