"""Embedding with the real packaged model: shapes, reuse of unchanged chunks, model configs."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from qpipe_dagster.embed.encoder import EmbeddingError, Encoder, model_id
from qpipe_dagster.embed.incremental import embed_chunks, explode_chunks, vectors_of

CHUNK = pa.struct(
    [
        ("index", pa.int32()),
        ("text", pa.large_string()),
        ("token_count", pa.int32()),
        ("content_hash", pa.string()),
    ]
)


def _parsed(pages: dict[str, list[str]]) -> pa.Table:
    rows = []
    for url, texts in pages.items():
        chunks = [
            {
                "index": i,
                "text": t,
                "token_count": len(t.split()),
                "content_hash": hashlib.sha256(t.encode()).hexdigest(),
            }
            for i, t in enumerate(texts)
        ]
        rows.append(
            {
                "url": url,
                "title": url.rsplit("/", 1)[-1],
                "fetched_at": datetime(2026, 1, 1, tzinfo=UTC),
                "parser_version": "t1",
                "chunks": chunks,
            }
        )
    schema = pa.schema(
        [
            ("url", pa.string()),
            ("title", pa.string()),
            ("fetched_at", pa.timestamp("us", tz="UTC")),
            ("parser_version", pa.string()),
            ("chunks", pa.list_(CHUNK)),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


PAGES = {
    "http://x/a": ["Bitcoin halves its block subsidy every four years.", "Miners earn fees too."],
    "http://x/b": ["A moving-average crossover follows trends."],
}


def test_embeds_then_reuses_unchanged_chunks() -> None:
    enc = Encoder()
    first, stats = embed_chunks(explode_chunks(_parsed(PAGES), "c", enc.model_id), enc)
    assert (stats.chunks, stats.embedded, stats.reused, stats.nan_rows) == (3, 3, 0, 0)
    vecs = vectors_of(first)
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert first.schema.field("vector").type == pa.list_(pa.float32(), 384)

    changed = {**PAGES, "http://x/b": ["A moving-average crossover follows strong trends."]}
    second, stats2 = embed_chunks(explode_chunks(_parsed(changed), "c", enc.model_id), enc, first)
    assert (stats2.embedded, stats2.reused) == (1, 2)
    assert np.array_equal(vectors_of(second)[:2], vecs[:2])
    assert second.column("id").to_pylist() == first.column("id").to_pylist()
    # The reused rows are exactly what a fresh encode gives.
    fresh = enc.encode(["Miners earn fees too."])[0]
    assert np.allclose(vectors_of(second)[1], fresh, atol=1e-5)


def test_truncated_model_is_another_configuration() -> None:
    full, small = Encoder(), Encoder(truncate_dim=256)
    assert small.model_id == "all-MiniLM-L6-v2@256" != full.model_id
    table, _ = embed_chunks(explode_chunks(_parsed(PAGES), "c", full.model_id), full)
    again, stats = embed_chunks(explode_chunks(_parsed(PAGES), "c", small.model_id), small, table)
    assert stats.reused == 0 and stats.embedded == 3
    assert again.schema.field("vector").type.list_size == 256


def test_empty_pages_give_empty_table() -> None:
    enc = Encoder()
    table, stats = embed_chunks(explode_chunks(_parsed({"http://x/e": []}), "c", enc.model_id), enc)
    assert table.num_rows == 0 and stats.chunks == 0


def test_bad_model_settings_are_clear() -> None:
    with pytest.raises(EmbeddingError, match="batch_size"):
        Encoder(batch_size=0)
    with pytest.raises(EmbeddingError, match="could not load embedding model"):
        _ = Encoder(name="/nonexistent/model-dir").dim
    with pytest.raises(EmbeddingError, match="device"):
        _ = Encoder(device="tpu").dim
    assert model_id("sentence-transformers/all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["fine", "a\ud800b"], r"text #1 to embed is not valid Unicode.*'\\ud800'"),
        # what os.fsdecode / sys.argv make of bytes that are not UTF-8 (a Latin-1 terminal)
        ([b"caf\xe9 au lait".decode("utf-8", "surrogateescape")], r"text #0 .*not valid Unicode"),
        (["ok", None], "text #1 to embed is NoneType, not str"),
        (["ok", 3], "text #1 to embed is int, not str"),
        ("a bare string", "must be a list of str, got str"),
    ],
)
def test_texts_the_tokenizer_cannot_take_are_named(texts: object, message: str) -> None:
    """Old code: a lone surrogate died in the tokenizer with 'TextEncodeInput must be
    Union[...]' (no hint which text), and a bare str came back as one 1-D vector."""
    with pytest.raises(EmbeddingError, match=message):
        Encoder().encode(texts)  # type: ignore[arg-type]


def test_odd_but_valid_texts_embed_to_unit_vectors() -> None:
    texts = ["", "   \n\t", "nul\x00byte", "word " * 5000, "caf\u00e9 \U0001f600"]
    vecs = Encoder().encode(texts)
    assert vecs.shape == (5, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_truncate_dim_larger_than_the_model_is_refused() -> None:
    """Old code: truncate_dim 1000 on a 384-dim model gave 384-dim vectors stored under the
    model id 'all-MiniLM-L6-v2@1000' - a second collection of the same vectors."""
    with pytest.raises(EmbeddingError, match=r"truncate_dim 1000 is larger than .* 384 dimensions"):
        _ = Encoder(truncate_dim=1000).dim
    assert Encoder(truncate_dim=384).dim == 384
    for bad in (True, 2.5, "256"):
        with pytest.raises(EmbeddingError, match="truncate_dim must be an integer"):
            Encoder(truncate_dim=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "device"), [(" CPU ", "cpu"), ("cuda:1", "cuda:1"), ("Auto", "auto")]
)
def test_device_names_are_normalised(given: str, device: str) -> None:
    from qpipe_dagster.embed.encoder import normalize_device

    assert normalize_device(given) == device


@pytest.mark.parametrize("bad", ["", "gpu", "cuda:x", "cuda:", "cuda:-1", None])
def test_bad_device_names_are_refused(bad: object) -> None:
    from qpipe_dagster.embed.encoder import normalize_device

    with pytest.raises(EmbeddingError, match="not one of auto, cpu, cuda, cuda:N"):
        normalize_device(bad)


def test_nan_vector_of_the_previous_run_is_not_reused() -> None:
    """Old code reused it for as long as the chunk text stayed the same: page_embeddings kept
    failing no_nan_vectors and the store kept refusing the concept, run after run."""
    enc = Encoder()
    first, _ = embed_chunks(explode_chunks(_parsed(PAGES), "c", enc.model_id), enc)
    vecs = vectors_of(first).copy()
    vecs[1, 7] = np.nan
    poisoned = first.set_column(
        first.schema.get_field_index("vector"),
        first.schema.field("vector"),
        pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), 384),
    )
    again, stats = embed_chunks(explode_chunks(_parsed(PAGES), "c", enc.model_id), enc, poisoned)
    assert (stats.embedded, stats.reused, stats.nan_rows) == (1, 2, 0)
    assert np.allclose(vectors_of(again), vectors_of(first), atol=1e-5)


@pytest.mark.parametrize("drop", ["model", "content_hash", "vector"])
def test_previous_table_of_another_shape_means_no_reuse(drop: str) -> None:
    """A stored page_embeddings from another version is ignored for reuse (old code: KeyError)."""
    enc = Encoder()
    first, _ = embed_chunks(explode_chunks(_parsed(PAGES), "c", enc.model_id), enc)
    _, stats = embed_chunks(
        explode_chunks(_parsed(PAGES), "c", enc.model_id), enc, first.drop_columns([drop])
    )
    assert (stats.embedded, stats.reused) == (3, 0)
