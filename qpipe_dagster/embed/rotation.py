"""Model rotation: re-embed every stored concept with another model, then switch search over.

Each (model, dimension) has its own collection, so vectors never mix. `reembed_all` fills the new
collection from the stored `parsed_pages` tables; only when every concept succeeded does the
active-model file change, so search keeps answering from the old collection until the new one is
complete. The old collection stays until it is dropped explicitly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from qpipe_dagster.embed.encoder import DEFAULT_MODEL, Encoder
from qpipe_dagster.embed.incremental import embed_chunks, explode_chunks
from qpipe_dagster.paths import qpipe_home
from qpipe_dagster.storage.arrow_files import read_table


@dataclass(frozen=True)
class ModelChoice:
    name: str = DEFAULT_MODEL
    truncate_dim: int | None = None


def active_model_file() -> Path:
    return qpipe_home() / "active_model.json"


def active_model() -> ModelChoice:
    """QPIPE_EMBED_MODEL / QPIPE_EMBED_TRUNCATE_DIM pin the model; else the last rotation; else default."""
    if os.environ.get("QPIPE_EMBED_MODEL"):
        dim = os.environ.get("QPIPE_EMBED_TRUNCATE_DIM")
        return ModelChoice(os.environ["QPIPE_EMBED_MODEL"], int(dim) if dim else None)
    path = active_model_file()
    if path.exists():
        try:
            data = json.loads(path.read_text())
            return ModelChoice(str(data["name"]), data.get("truncate_dim"))
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


def stored_concepts(asset_dir: Path) -> list[str]:
    folder = asset_dir / "parsed_pages"
    return (
        sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if folder.exists()
        else []
    )


def reembed_all(
    encoder: Encoder,
    open_store: Callable[[str, int], object],
    asset_dir: Path,
    *,
    concepts: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, int]]:
    """Embed every stored concept's chunks with `encoder` into its own collection."""
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
