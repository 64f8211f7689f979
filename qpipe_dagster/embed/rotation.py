"""Model rotation: re-embed every stored concept with another model, then switch search over.

Each (model, dimension) has its own collection, so vectors never mix. `reembed_all` fills the new
collection from the stored `parsed_pages` tables; only when every concept succeeded does the
active-model file change, so search keeps answering from the old collection until the new one is
complete. The old collection stays until it is dropped explicitly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from upath import UPath  # QPIPE_ASSET_URL: tables in a bucket

from qpipe_dagster.concepts import validate_slug
from qpipe_dagster.embed.encoder import DEFAULT_MODEL, Encoder
from qpipe_dagster.embed.incremental import embed_chunks, explode_chunks
from qpipe_dagster.paths import qpipe_home
from qpipe_dagster.settings import SettingError, embed_truncate_dim, env_value
from qpipe_dagster.storage.arrow_files import read_table
from qpipe_dagster.store.base import VectorStore


@dataclass(frozen=True)
class ModelChoice:
    name: str = DEFAULT_MODEL
    truncate_dim: int | None = None


def active_model_file() -> Path:
    return qpipe_home() / "active_model.json"


def active_model(env: Mapping[str, str] | None = None) -> ModelChoice:
    """QPIPE_EMBED_MODEL / QPIPE_EMBED_TRUNCATE_DIM pin the model; else the last rotation; else default.

    Blank variables count as unset; a truncation without a model, or one that is not a whole
    number >= 1, is a SettingError naming the variable (never silently ignored). `env` (default
    os.environ) also locates DAGSTER_HOME, so `qpipe doctor` checks the model in use.
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
    if env is None:
        path = active_model_file()
    else:
        home = Path(env_value("DAGSTER_HOME", env) or ".dagster_home").resolve()
        path = home / "qpipe" / "active_model.json"
    if path.exists():
        try:
            data = json.loads(path.read_text())
            choice = ModelChoice(str(data["name"]), data.get("truncate_dim"))
            dim = choice.truncate_dim
            if dim is not None and (type(dim) is not int or dim < 1):
                raise ValueError(f"truncate_dim {dim!r} is not a whole number >= 1")
            if not choice.name.strip():
                raise ValueError("name is empty")
            return choice
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path} is not a valid model choice ({exc}); delete it to reset"
            ) from exc
    return ModelChoice()


def set_active_model(choice: ModelChoice) -> None:
    """Atomic replace, so a reader never sees half a file."""
    path = active_model_file()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(choice)))
    os.replace(tmp, path)


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
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, int]]:
    """Embed every stored concept's chunks with `encoder` into its own collection."""
    for concept in concepts or []:  # a key like '../x' would read files outside parsed_pages
        validate_slug(concept)
    report: dict[str, dict[str, int]] = {}
    store = open_store(encoder.model_id, encoder.dim)
    try:
        for concept in concepts or stored_concepts(asset_dir):
            parsed = read_table(asset_dir / "parsed_pages" / concept)
            if parsed is None:
                raise ValueError(
                    f"no parsed_pages stored for concept {concept!r}: materialize it first"
                )
            table, stats = embed_chunks(explode_chunks(parsed, concept, encoder.model_id), encoder)
            counts = store.upsert(table)
            deleted = store.delete_missing(concept, set(table.column("id").to_pylist()))
            report[concept] = {**asdict(counts), "deleted": deleted, "embedded": stats.embedded}
            log(f"{concept}: {stats.chunks} chunks -> {store.collection} ({counts})")
    finally:
        store.close()
    return report
