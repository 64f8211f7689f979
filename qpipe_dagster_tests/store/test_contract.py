"""The VectorStore contract, run against every available backend (see conftest.backend)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from qpipe_dagster.store import (
    UpsertCounts,
    VectorStoreError,
    objects_schema,
    open_store,
    stored_schema,
    with_trace,
)
from qpipe_dagster_tests.store.store_testdata import make_objects

REPO = Path(__file__).resolve().parents[2]
DIM = 16


def _vectors(table: pa.Table) -> np.ndarray:
    return table.column("vector").combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)


def test_counts_insert_update_unchanged(store) -> None:
    first = make_objects("alpha", 40, DIM)
    assert store.upsert(first) == UpsertCounts(inserted=40, updated=0, unchanged=0)
    # rows 0-9 change text (and vector), 10-39 stay, 40-44 are new
    changed = make_objects("alpha", 10, DIM, version="v2")
    more = make_objects("alpha", 5, DIM, start=40)
    second = pa.concat_tables([changed, first.slice(10), more])
    assert store.upsert(second) == UpsertCounts(inserted=5, updated=10, unchanged=30)
    assert store.count() == 45
    assert store.count("alpha") == 45
    hit = store.search(_vectors(changed)[3], k=1, concept="alpha")[0]
    assert hit.id == changed.column("id")[3].as_py()
    assert hit.text == "alpha chunk 3 v2"


def test_upsert_twice_is_idempotent(backend) -> None:
    store = backend.open(batch_size=7)
    objects = make_objects("alpha", 30, DIM)
    assert store.upsert(objects) == UpsertCounts(30, 0, 0)
    assert store.upsert(objects) == UpsertCounts(0, 0, 30)
    assert store.count() == 30
    assert store.ids("alpha") == set(objects.column("id").to_pylist())


def test_empty_upsert_and_progress(store) -> None:
    assert store.upsert(make_objects("alpha", 0, DIM)) == UpsertCounts(0, 0, 0)
    seen: list[UpsertCounts] = []
    store.batch_size = 4
    store.upsert(make_objects("alpha", 10, DIM), progress=seen.append)
    assert [c.inserted for c in seen] == [4, 8, 10]


def test_delete_missing(store) -> None:
    alpha = make_objects("alpha", 20, DIM)
    beta = make_objects("beta", 8, DIM)
    store.upsert(pa.concat_tables([alpha, beta]))
    keep = alpha.column("id").to_pylist()[:12]
    assert store.delete_missing("alpha", keep) == 8
    assert store.ids("alpha") == set(keep)
    assert store.count("beta") == 8  # another concept is never touched
    assert store.delete_missing("alpha", keep) == 0
    assert store.delete_missing("beta", []) == 8
    assert store.count() == 12
    # a bare string would iterate as characters and wipe the concept: refused instead
    with pytest.raises(VectorStoreError, match="keep_ids must be a collection"):
        store.delete_missing("alpha", keep[0])
    with pytest.raises(VectorStoreError, match="keep_ids must hold id strings"):
        store.delete_missing("alpha", [1, 2])
    assert store.count("alpha") == 12


def test_search_exact_nearest_first_with_cosine_score(store) -> None:
    alpha = make_objects("alpha", 60, DIM)
    beta = make_objects("beta", 60, DIM, seed=1)
    store.upsert(pa.concat_tables([alpha, beta]))
    vectors = np.vstack([_vectors(alpha), _vectors(beta)])
    ids = alpha.column("id").to_pylist() + beta.column("id").to_pylist()
    rng = np.random.default_rng(7)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for target in (3, 75):
        query = vectors[target] + 0.05 * rng.standard_normal(DIM).astype(np.float32)
        hits = store.search(query, k=5)
        cos = unit @ (query / np.linalg.norm(query))
        assert hits[0].id == ids[target]
        assert [h.id for h in hits] == [ids[i] for i in np.argsort(-cos)[:5]]
        assert [h.score for h in hits] == pytest.approx(sorted(cos, reverse=True)[:5], abs=1e-4)
        assert all(-1.0 <= h.score <= 1.0 + 1e-6 for h in hits)
    # concept filter: the nearest alpha object is found, never a beta one
    hits = store.search(vectors[75], k=10, concept="alpha")
    assert len(hits) == 10 and {h.concept for h in hits} == {"alpha"}
    top = store.search(vectors[3], k=1, concept="alpha")[0]
    assert (top.id, top.url, top.chunk_index, top.text) == (
        ids[3],
        alpha.column("url")[3].as_py(),
        3,
        "alpha chunk 3 v1",
    )
    assert top.title == alpha.column("title")[3].as_py()
    assert store.search(vectors[3], k=3, concept="no such concept") == []


def test_concept_with_quote_is_safe(store) -> None:
    odd = make_objects("o'brien; DROP", 5, DIM)
    store.upsert(odd)
    assert store.count("o'brien; DROP") == 5
    assert len(store.search(_vectors(odd)[0], k=3, concept="o'brien; DROP")) == 3
    assert store.delete_missing("o'brien; DROP", []) == 5


def test_dimension_mismatch_is_a_clear_error(store) -> None:
    store.upsert(make_objects("alpha", 5, DIM))
    with pytest.raises(VectorStoreError, match=r"dimension mismatch.*16.*8"):
        store.upsert(make_objects("alpha", 5, 8))
    with pytest.raises(VectorStoreError, match="query vector has 8 dimensions"):
        store.search(np.ones(8, np.float32))
    with pytest.raises(VectorStoreError, match="not all zeros"):
        store.search(np.zeros(DIM, np.float32))
    with pytest.raises(VectorStoreError, match="k must be a positive integer"):
        store.search(np.ones(DIM, np.float32), k=0)
    assert store.count() == 5


def _replace(table: pa.Table, name: str, column: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, column)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.drop_columns(["content_hash"]), r"missing columns \['content_hash'\]"),
        (lambda t: t.append_column("extra", pa.array([1] * t.num_rows)), r"unexpected.*extra"),
        (
            lambda t: _replace(t, "text", pa.array([None] + ["x"] * (t.num_rows - 1), pa.string())),
            "column 'text' has 1 null",
        ),
        (
            lambda t: _replace(t, "chunk_index", pa.array(["a"] * t.num_rows)),
            "column 'chunk_index' has type string",
        ),
        (
            lambda t: _replace(t, "id", pa.array(["not-a-uuid"] * t.num_rows)),
            "'id' must hold lowercase UUID",
        ),
        (lambda t: pa.concat_tables([t, t.slice(0, 1)]), "duplicate id"),
        (
            lambda t: _replace(
                t,
                "vector",
                pa.FixedSizeListArray.from_arrays(
                    pa.array(
                        np.where(np.arange(t.num_rows * DIM) == 40, np.nan, 1.0), pa.float32()
                    ),
                    DIM,
                ),
            ),
            "NaN or infinity",
        ),
        (
            lambda t: _replace(
                t,
                "vector",
                pa.FixedSizeListArray.from_arrays(
                    pa.array(np.zeros(t.num_rows * DIM, np.float32)), DIM
                ),
            ),
            "all zeros",
        ),
        (lambda t: t.to_pandas(), "expects a pyarrow.Table"),
        # Arrow casts int64 to a timestamp as microseconds: epoch seconds landed as 1970
        (
            lambda t: _replace(t, "fetched_at", pa.array([1_700_000_000] * t.num_rows, pa.int64())),
            r"'fetched_at' has type int64, expected timestamp\[us, tz=UTC\] \(a bare number",
        ),
        (
            lambda t: _replace(t, "fetched_at", pa.array(["2026-11-23"] * t.num_rows)),
            r"'fetched_at' has type string, expected timestamp.*convert the text",
        ),
        # ... and numbers to text by printing them
        (
            lambda t: _replace(t, "title", pa.array(range(t.num_rows), pa.int64())),
            r"'title' has type int64, expected string",
        ),
        # finite values whose float32 squared norm overflows / underflows: old code stored
        # them, and every search scored them 0.0 (or inf) whatever the query
        (
            lambda t: _replace(
                t,
                "vector",
                pa.FixedSizeListArray.from_arrays(
                    pa.array(np.full(t.num_rows * DIM, 1e30, np.float32)), DIM
                ),
            ),
            "has a length of 4e[+]30, outside what float32 cosine similarity can handle",
        ),
        (
            lambda t: _replace(
                t,
                "vector",
                pa.FixedSizeListArray.from_arrays(
                    pa.array(np.full(t.num_rows * DIM, 1e-30, np.float32)), DIM
                ),
            ),
            "has a length of 4e-30",
        ),
    ],
)
def test_bad_objects_are_rejected_before_any_write(store, mutate, message) -> None:
    store.upsert(make_objects("alpha", 6, DIM))
    bad = mutate(make_objects("beta", 6, DIM))
    with pytest.raises(VectorStoreError, match=message):
        store.upsert(bad)
    assert store.count() == 6 and store.count("beta") == 0  # nothing lost, nothing half-written


def test_castable_types_are_accepted(store) -> None:
    """A list<float64> vector column and string text (what polars/pandas produce) still load."""
    objects = make_objects("alpha", 4, DIM)
    loose = _replace(
        objects,
        "vector",
        pa.array(_vectors(objects).astype(np.float64).tolist(), pa.list_(pa.float64())),
    )
    loose = _replace(loose, "text", objects.column("text").cast(pa.string()))
    loose = loose.select(list(reversed(loose.column_names)))
    assert store.upsert(loose) == UpsertCounts(4, 0, 0)
    assert store.upsert(objects) == UpsertCounts(0, 0, 4)


def _writer_argv(backend, n: int, batch_size: int, kill_after: int, version: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "qpipe_dagster_tests.store.crash_writer",
        backend.name,
        backend.location,
        backend.model(),
        str(DIM),
        str(n),
        str(batch_size),
        str(kill_after),
        version,
    ]


def _writer_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *sys.path]))


def _run_crashing_writer(backend, n: int, batch_size: int, kill_after: int, version: str) -> None:
    proc = subprocess.run(
        _writer_argv(backend, n, batch_size, kill_after, version),
        env=_writer_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_crash_between_batches_then_rerun_converges(backend) -> None:
    n, bs = 50, 10
    # 1. a fresh load killed after 2 committed batches
    _run_crashing_writer(backend, n, bs, kill_after=2, version="v1")
    store = backend.open(batch_size=bs)
    assert store.count("crash") == 2 * bs  # exactly the committed batches, no partial batch
    v1 = make_objects("crash", n, DIM, version="v1")
    assert store.upsert(v1) == UpsertCounts(inserted=n - 2 * bs, updated=0, unchanged=2 * bs)
    assert store.count() == n and store.ids("crash") == set(v1.column("id").to_pylist())
    # 2. an update run killed after 3 batches: a mix of old and new content, then the re-run
    _run_crashing_writer(backend, n, bs, kill_after=3, version="v2")
    v2 = make_objects("crash", n, DIM, version="v2")
    assert store.upsert(v2) == UpsertCounts(inserted=0, updated=n - 3 * bs, unchanged=3 * bs)
    assert store.count() == n
    assert store.upsert(v2) == UpsertCounts(0, 0, n)
    vecs = _vectors(v2)
    for row in (0, 25, 49):
        hit = store.search(vecs[row], k=1)[0]
        assert (hit.id, hit.text) == (v2.column("id")[row].as_py(), f"crash chunk {row} v2")
        assert hit.score == pytest.approx(1.0, abs=1e-4)


def test_kill_at_an_arbitrary_moment_loses_no_batch_and_adds_no_duplicate(backend) -> None:
    """SIGKILL from outside, mid-write: only whole batches are visible, the re-run completes."""
    n, bs = 2000, 50
    store = backend.open(batch_size=bs)  # creates the collection before the child starts
    child = subprocess.Popen(
        _writer_argv(backend, n, bs, kill_after=0, version="v1"),
        env=_writer_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        while store.count() == 0 and child.poll() is None:
            time.sleep(0.002)
    finally:
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=60)
    assert child.returncode in (-signal.SIGKILL, 3), err
    seen = store.count()
    assert 0 < seen <= n
    if backend.name == "lancedb":
        assert seen % bs == 0  # one atomic commit per batch: whole batches only
    objects = make_objects("crash", n, DIM, version="v1")
    assert store.upsert(objects) == UpsertCounts(inserted=n - seen, updated=0, unchanged=seen)
    assert store.count() == n and store.ids("crash") == set(objects.column("id").to_pylist())


def test_model_rotation_keeps_collections_apart(backend) -> None:
    big = backend.open(model="minilm", dim=384)
    small = backend.open(model="minilm", dim=256)
    other = backend.open(model="other-model", dim=384)
    assert len({big.collection, small.collection, other.collection}) == 3
    big.upsert(make_objects("alpha", 10, 384))
    small.upsert(make_objects("alpha", 7, 256))
    assert (big.count(), small.count(), other.count()) == (10, 7, 0)
    assert big.upsert(make_objects("alpha", 10, 384)) == UpsertCounts(0, 0, 10)
    assert small.search(_vectors(make_objects("alpha", 7, 256))[2], k=1)[0].score == pytest.approx(
        1.0, abs=1e-4
    )
    with pytest.raises(VectorStoreError, match="dimension mismatch"):
        small.upsert(make_objects("alpha", 3, 384))
    # reopening finds the same data again
    assert backend.open(model="minilm", dim=256).count() == 7


def test_schema_helper_matches_the_brief() -> None:
    schema = objects_schema(384)
    assert schema.field("vector").type == pa.list_(pa.float32(), 384)
    assert schema.field("fetched_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("text").type == pa.large_string()
    assert schema.field("chunk_index").type == pa.int32()
    assert [f.name for f in schema if f.nullable] == ["title"]
    stored = stored_schema(384)
    assert stored.names == [*schema.names, "run_id", "message_id"]
    assert [f.name for f in stored if f.nullable] == ["title", "run_id", "message_id"]
    assert pc.all(pc.equal(make_objects("a", 3, 4).column("concept"), "a")).as_py()


def test_query_length_changes_no_score(store) -> None:
    """Cosine similarity ignores the query's length. Old code: a query of tiny values scored
    every hit inf (its float32 squared norm underflowed to 0), a huge float64 one was refused
    as 'not finite' after the cast to float32."""
    alpha = make_objects("alpha", 30, DIM)
    store.upsert(alpha)
    query = _vectors(alpha)[4].astype(np.float64) + 0.1
    want = [(h.id, h.score) for h in store.search(query, k=5)]
    for scale in (1e-30, 1e-200, 1e30, 1e300):
        got = [(h.id, h.score) for h in store.search(query * scale, k=5)]
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)


def test_k_bounds_and_integer_types(store) -> None:
    """Old code: k=10**12 raised OverflowError from inside LanceDB; a NumPy integer k was
    refused as 'not a positive integer'."""
    store.upsert(make_objects("alpha", 8, DIM))
    query = np.ones(DIM, np.float32)
    assert len(store.search(query, k=np.int64(3))) == 3
    assert len(store.search(query, k=10_000)) == 8
    for bad in (10**12, 10_001, 0, -1, 2.0, True, "3"):
        with pytest.raises(VectorStoreError, match="k must be a positive integer of at most 10000"):
            store.search(query, k=bad)


@pytest.mark.parametrize(
    "concept",
    ["alpha\ud800", b"alpha".decode("utf-8") + b"\xff".decode("utf-8", "surrogateescape"), 5],
)
def test_concept_that_is_not_text_is_named(store, concept: object) -> None:
    """Old code: a lone surrogate raised UnicodeEncodeError from the SQL filter, an int an
    AttributeError."""
    store.upsert(make_objects("alpha", 4, DIM))
    for call in (
        lambda: store.search(np.ones(DIM, np.float32), k=2, concept=concept),
        lambda: store.count(concept),
        lambda: store.ids(concept),
        lambda: store.delete_missing(concept, []),
    ):
        with pytest.raises(VectorStoreError, match="concept"):
            call()
    assert store.count() == 4


def test_read_only_open_creates_nothing(backend) -> None:
    """create=False (what `qpipe search` uses): a missing store or collection is an error that
    says so, and is not created empty (old code always created it)."""
    kw: dict = {"model": backend.model("readonly"), "dim": DIM, "create": False}
    if backend.name == "weaviate":
        kw.update(
            weaviate_url=backend.location, weaviate_api_key=os.environ.get("WEAVIATE_API_KEY")
        )
    else:
        kw.update(lance_path=backend.location)
    with pytest.raises(VectorStoreError, match=r"no local vector store|has no collection"):
        open_store(**kw)
    backend.open(model="other").upsert(make_objects("alpha", 3, DIM))
    with pytest.raises(VectorStoreError, match=r"has no collection .*readonly") as info:
        open_store(**kw)
    if backend.name == "lancedb":
        assert backend.open(model="other").collection in str(info.value)  # what is there
    writer = backend.open(model="readonly")
    writer.upsert(make_objects("alpha", 5, DIM))
    reader = open_store(**kw)
    try:
        assert reader.count() == 5
    finally:
        reader.close()


def test_objects_name_the_run_and_message_that_wrote_them(store) -> None:
    """Every object carries the run id and QStash message id of the run that last inserted or
    changed it; an unchanged chunk is not rewritten, so it keeps naming its original run."""
    first = with_trace(make_objects("alpha", 8, DIM), run_id="run-1", message_id="msg_1")
    assert store.upsert(first) == UpsertCounts(8, 0, 0)
    hit = store.search(_vectors(first)[2], k=1, concept="alpha")[0]
    assert (hit.run_id, hit.message_id) == ("run-1", "msg_1")
    assert store.count_by_run("alpha") == {"run-1": 8}

    # a run from the UI (no message): rows 0-2 change, 3-7 stay, 8-9 are new
    changed = make_objects("alpha", 3, DIM, version="v2")
    second = pa.concat_tables([changed, first.slice(3).drop_columns(["run_id", "message_id"]),
                               make_objects("alpha", 2, DIM, start=8)])  # fmt: skip
    second = with_trace(second, run_id="run-2", message_id=None)
    assert store.upsert(second) == UpsertCounts(inserted=2, updated=3, unchanged=5)
    assert store.count_by_run("alpha") == {"run-1": 5, "run-2": 5}
    hit = store.search(_vectors(changed)[0], k=1, concept="alpha")[0]
    assert (hit.run_id, hit.message_id) == ("run-2", None)
    hit = store.search(_vectors(first)[5], k=1, concept="alpha")[0]
    assert (hit.run_id, hit.message_id) == ("run-1", "msg_1")

    # objects stored without provenance (a direct upsert, `qpipe reembed`) name no run
    store.upsert(make_objects("beta", 3, DIM))
    assert store.count_by_run("beta") == {None: 3}
    assert store.count_by_run("nobody") == {}
    hit = store.search(_vectors(make_objects("beta", 3, DIM))[0], k=1, concept="beta")[0]
    assert (hit.run_id, hit.message_id) == (None, None)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"run_id": "", "message_id": None}, "run_id must be a non-empty string or None, got ''"),
        ({"run_id": "r", "message_id": 7}, "message_id must be a non-empty string or None, got 7"),
    ],
)
def test_bad_provenance_is_named(kw: dict, message: str) -> None:
    with pytest.raises(VectorStoreError, match=message):
        with_trace(make_objects("alpha", 2, DIM), **kw)


def test_provenance_of_the_wrong_type_is_refused(store) -> None:
    bad = make_objects("alpha", 3, DIM).append_column("run_id", pa.array([1, 2, 3]))
    with pytest.raises(VectorStoreError, match="'run_id' has type int64, expected string"):
        store.upsert(bad)
    assert store.count() == 0
