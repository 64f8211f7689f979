"""Model rotation: re-embed every stored concept with another model, then switch search over.

Each (model, dimension) has its own collection, so vectors never mix. `reembed_all` fills the new
collection from the stored `parsed_pages` tables; only when every concept succeeded does the
caller record the new active model (`set_active_model`), so search keeps answering from the old
collection until the new one is complete. The old collection stays until it is dropped explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

from upath import UPath  # QPIPE_ASSET_URL: tables in a bucket

from qpipe_dagster.concepts import ModelChoice, active_model_store, validate_slug
from qpipe_dagster.embed.encoder import DEFAULT_MODEL, Encoder
from qpipe_dagster.embed.incremental import embed_chunks, explode_chunks
from qpipe_dagster.paths import qpipe_home, state_paths
from qpipe_dagster.settings import SettingError, embed_truncate_dim, env_value
from qpipe_dagster.storage.arrow_files import read_table
from qpipe_dagster.store.base import VectorStore
from qpipe_dagster.store.sync import sync_concept


def active_model_file() -> Path:
    """Where the choice lives on a local install (QPIPE_CONCEPTS_URL unset), its folder created."""
    qpipe_home()
    return state_paths().active_model


def active_model(env: Mapping[str, str] | None = None) -> ModelChoice:
    """QPIPE_EMBED_MODEL / QPIPE_EMBED_TRUNCATE_DIM pin the model; else the last rotation; else default.

    Blank variables count as unset; a truncation without a model, or one that is not a whole
    number >= 1, is a SettingError naming the variable (never silently ignored). The last
    rotation is read from the shared store (`concepts.active_model_store`: PostgreSQL with
    QPIPE_CONCEPTS_URL, else $DAGSTER_HOME/qpipe/active_model.json). `env` (default os.environ)
    also selects that store, so `qpipe doctor` checks the model in use.
    """
    name = env_value("QPIPE_EMBED_MODEL", env)
    truncate_dim = embed_truncate_dim(env)
    if name is not None:
        return ModelChoice(name, truncate_dim)
    if truncate_dim is not None:
        raise SettingError(
            f"QPIPE_EMBED_TRUNCATE_DIM={truncate_dim} is set but QPIPE_EMBED_MODEL is not: the "
            "truncation applies to a pinned model only; set QPIPE_EMBED_MODEL too (e.g. "
            f"{DEFAULT_MODEL}), or rotate with `qpipe reembed --model NAME --truncate-dim N`"
        )
    return active_model_store(env).get() or ModelChoice(DEFAULT_MODEL)


def set_active_model(choice: ModelChoice) -> None:
    """Switch search for every process sharing the store; called only once a re-embed is whole.
    A reader sees the old choice or the new one (a file renamed over, or one transaction)."""
    active_model_store().set(choice)


def stored_concepts(asset_dir: Path | UPath) -> list[str]:
    folder = asset_dir / "parsed_pages"
    return (
        sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if folder.exists()
        else []
    )


def reembed_all(
    encoder: Encoder,
    open_store: Callable[[str, int], VectorStore],
    asset_dir: Path | UPath,
    *,
    concepts: list[str] | None = None,
    progress: Callable[[int, int, str], None] = lambda _done, _total, _note: None,
) -> dict[str, dict[str, int]]:
    """Embed every stored concept's chunks with `encoder` into its own collection.

    `progress(done, total, note)` is called with done=0 before the first concept and after each
    one with what it did, so the CLI can show a bar or a line per concept (it owns the display).
    """
    for concept in concepts or []:  # a key like '../x' would read files outside parsed_pages
        validate_slug(concept)
    todo = concepts or stored_concepts(asset_dir)
    report: dict[str, dict[str, int]] = {}
    store = open_store(encoder.model_id, encoder.dim)
    try:
        progress(0, len(todo), f"into {store.collection}")
        for done, concept in enumerate(todo, start=1):
            parsed = read_table(asset_dir / "parsed_pages" / concept)
            if parsed is None:
                raise ValueError(
                    f"no parsed_pages stored for concept {concept!r}: materialize it first"
                )
            table, stats = embed_chunks(explode_chunks(parsed, concept, encoder.model_id), encoder)
            synced = sync_concept(store, table, concept)
            report[concept] = {
                **asdict(synced.counts),
                "deleted": synced.deleted,
                "embedded": stats.embedded,
            }
            progress(done, len(todo), f"{concept} ({stats.chunks} chunks)")
    finally:
        store.close()
    return report
