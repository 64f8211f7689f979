"""One interface over the local (LanceDB) and production (Weaviate) vector stores."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from qpipe_dagster.paths import qpipe_home, state_paths
from qpipe_dagster.store.lance import LanceStore
from qpipe_dagster.store.objects import SearchHit, UpsertCounts, VectorStoreError
from qpipe_dagster.store.weaviate import WeaviateStore  # the client itself is imported on use


@runtime_checkable
class VectorStore(Protocol):
    """A collection of embedded chunks for one (model, dim).

    Upserts are keyed by `id` and idempotent; a crash between batches followed by a re-run
    converges to the same store (every batch is committed atomically).
    """

    backend: str  # "lancedb" | "weaviate"
    collection: str
    dim: int

    def upsert(
        self, objects: pa.Table, *, progress: Callable[[UpsertCounts], None] | None = None
    ) -> UpsertCounts:
        """Insert new ids, overwrite ids whose content_hash changed, skip the rest.

        `progress` gets the running counts after each committed batch.
        """
        ...

    def delete_missing(self, concept: str, keep_ids: Collection[str]) -> int:
        """Delete `concept`'s objects whose id is not in keep_ids; returns how many went."""
        ...

    def search(
        self, vector: np.ndarray, k: int = 10, concept: str | None = None
    ) -> list[SearchHit]:
        """The k nearest objects by cosine similarity, best first, optionally within a concept."""
        ...

    def count(self, concept: str | None = None) -> int:
        """Number of stored objects (of one concept when given)."""
        ...

    def ids(self, concept: str) -> set[str]:
        """Every stored id of a concept."""
        ...

    def count_by_run(self, concept: str) -> dict[str | None, int]:
        """A concept's objects per `run_id` that last wrote them (None: not recorded), for
        `qpipe trace`; an unchanged chunk keeps the run that inserted or last changed it."""
        ...

    def close(self) -> None:
        """Release connections (a no-op for LanceDB)."""
        ...


def default_lance_path() -> Path:
    """QPIPE_LANCE_PATH, else `$DAGSTER_HOME/qpipe/vectors` (`paths.state_paths`): the local
    store lives with the rest of the install, where the pipeline's resource opens it."""
    try:
        qpipe_home()  # created, or DAGSTER_HOME named when it cannot hold qpipe's state
        return state_paths().vectors
    except OSError as exc:
        raise VectorStoreError(
            f"cannot create the local vector store under DAGSTER_HOME: {exc}"
        ) from None


def open_store(
    *,
    model: str,
    dim: int,
    lance_path: str | Path | None = None,
    weaviate_url: str | None = None,
    weaviate_api_key: str | None = None,
    batch_size: int = 2000,
    create: bool = True,
) -> VectorStore:
    """Weaviate when `weaviate_url` is given, else LanceDB at `lance_path` (default under DAGSTER_HOME).

    Fails fast with VectorStoreError (naming the path/URL) when the store cannot be used, rather
    than at the first write hours into a run. With create=False (read-only use, e.g. search)
    nothing is created: a missing store or collection is a VectorStoreError saying so.
    """
    if weaviate_url and weaviate_url.strip():
        return WeaviateStore(
            url=weaviate_url,
            api_key=weaviate_api_key,
            model=model,
            dim=dim,
            batch_size=batch_size,
            create=create,
        )
    # blank means the default, as for QPIPE_LANCE_PATH ('' would be the working directory)
    blank = lance_path is None or not str(lance_path).strip()
    path = default_lance_path() if blank else Path(str(lance_path).strip())
    return LanceStore(path=path, model=model, dim=dim, batch_size=batch_size, create=create)
