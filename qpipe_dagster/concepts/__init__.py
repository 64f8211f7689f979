"""Concepts: the trader's named ideas, one Dagster partition each.

A concept has a slug (the partition key), the seed URLs its pages are crawled from and an
optional market symbol (`model`). The registry is a small SQLite file under DAGSTER_HOME
(`sqlite`) so the UI, the QStash sensor and the CLI all see the same concepts, or PostgreSQL
(`postgres`) when QPIPE_CONCEPTS_URL is set; `default_registry()` picks one. The active-model
choice (`active_model`) is shared state of the same kind and follows the same setting
(`active_model_store()`). No Dagster imports here.
"""

from qpipe_dagster.concepts.active_model import ActiveModelError, ActiveModelStore, ModelChoice
from qpipe_dagster.concepts.base import active_model_store, default_registry
from qpipe_dagster.concepts.model import (
    MAX_NAME_CHARS,
    MAX_SEED_URLS,
    MAX_SLUG_CHARS,
    Concept,
    ConceptError,
    RegistryError,
    has_lone_surrogate,
    host_fault,
    merge_for_upsert,
    normalize_symbol,
    slugify,
    validate_slug,
    validate_url,
)
from qpipe_dagster.concepts.sqlite import ConceptRegistry

__all__ = [
    "MAX_NAME_CHARS",
    "MAX_SEED_URLS",
    "MAX_SLUG_CHARS",
    "ActiveModelError",
    "ActiveModelStore",
    "Concept",
    "ConceptError",
    "ConceptRegistry",
    "ModelChoice",
    "RegistryError",
    "active_model_store",
    "default_registry",
    "has_lone_surrogate",
    "host_fault",
    "merge_for_upsert",
    "normalize_symbol",
    "slugify",
    "validate_slug",
    "validate_url",
]
