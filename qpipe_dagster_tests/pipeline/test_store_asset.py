"""weaviate_objects stores page_embeddings only under the model they were embedded with."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import Failure, build_asset_context

from qpipe_dagster.defs.knowledge import weaviate_objects
from qpipe_dagster.defs.resources import EmbedderResource, VectorStoreResource
from qpipe_dagster.store import open_store
from qpipe_dagster_tests.store.store_testdata import make_objects


def _run(table, store_dir: Path):
    with build_asset_context(partition_key="alpha") as ctx:
        return weaviate_objects(
            ctx,
            page_embeddings=table,
            embedder=EmbedderResource(),
            vector_store=VectorStoreResource(lance_path=str(store_dir)),
        )


def test_embeddings_of_the_configured_model_are_stored(tmp_path: Path) -> None:
    result = _run(make_objects("alpha", 6, 384, model="all-MiniLM-L6-v2"), tmp_path)
    assert result.metadata["inserted"] == 6
    assert result.metadata["collection"] == "Chunks_all_minilm_l6_v2_d384"


@pytest.mark.parametrize("dim", [384, 16])
def test_embeddings_of_another_model_are_refused(tmp_path: Path, dim: int) -> None:
    """Old code: vectors of another model (left from a run before QPIPE_EMBED_MODEL changed)
    went into the configured model's collection (Chunks_all_minilm_l6_v2_d384, or a new
    Chunks_all_minilm_l6_v2_d16), mixed with its vectors and searched with its queries."""
    with pytest.raises(Failure) as info:
        _run(make_objects("alpha", 6, dim, model="other-model"), tmp_path)
    message = info.value.description
    assert "embedded with 'other-model'" in message and "'all-MiniLM-L6-v2'" in message
    assert "materialize page_embeddings" in message
    for d in (384, dim):
        assert open_store(model="all-MiniLM-L6-v2", dim=d, lance_path=tmp_path).count() == 0
