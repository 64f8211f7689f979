"""LanceDB-only behaviour: opening errors, the ANN index path, the default location."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from qpipe_dagster.store import VectorStoreError, collection_name, objects_schema, open_store
from qpipe_dagster.store.lance import IndexInfo, LanceStore, index_action
from qpipe_dagster_tests.store.store_testdata import make_objects


def _writable(path: Path) -> bool:
    probe = path / ".probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody can write, even root (chattr +i when permission bits don't bind)."""
    path = tmp_path / "ro"
    path.mkdir()
    path.chmod(0o555)
    immutable = False
    if _writable(path):  # root ignores mode bits
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(path)]).returncode != 0:
            path.chmod(0o755)
            pytest.skip("running as root without chattr/CAP_LINUX_IMMUTABLE: no read-only dir")
        immutable = True
    try:
        yield path
    finally:
        if immutable:
            subprocess.run([shutil.which("chattr") or "chattr", "-i", str(path)], check=True)
        path.chmod(0o755)


def test_read_only_dir_is_refused_at_open(read_only_dir: Path) -> None:
    with pytest.raises(VectorStoreError, match=rf"{read_only_dir}.*not writable"):
        open_store(model="m", dim=8, lance_path=read_only_dir)
    target = read_only_dir / "vectors"
    with pytest.raises(VectorStoreError, match=rf"{target}.*cannot create"):
        open_store(model="m", dim=8, lance_path=target)


def test_path_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    regular = tmp_path / "file.txt"
    regular.write_text("not a directory")
    with pytest.raises(VectorStoreError, match=rf"{regular}.*not a directory"):
        open_store(model="m", dim=8, lance_path=regular)
    with pytest.raises(VectorStoreError, match=rf"{regular / 'sub'}.*parent is not a directory"):
        open_store(model="m", dim=8, lance_path=regular / "sub")


def test_existing_table_with_other_dim_is_refused(tmp_path: Path) -> None:
    db = lancedb.connect(str(tmp_path))
    db.create_table(collection_name("m", 16), schema=objects_schema(8))
    with pytest.raises(VectorStoreError, match=r"dimension mismatch.*8-dim.*16-dim"):
        open_store(model="m", dim=16, lance_path=tmp_path)


def test_bad_batch_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VectorStoreError, match="batch_size must be a positive integer"):
        open_store(model="m", dim=8, lance_path=tmp_path, batch_size=0)


def test_default_location_is_under_dagster_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    store = open_store(model="m", dim=8)
    assert store.backend == "lancedb"
    assert store.path == tmp_path / "home" / "qpipe" / "vectors"
    store.upsert(make_objects("a", 3, 8))
    assert open_store(model="m", dim=8).count() == 3


def _clustered(table: pa.Table, centers: np.ndarray, rng: np.random.Generator) -> pa.Table:
    """Replace the vectors with points around topic centres, the shape text embeddings have.

    Isotropic noise is the worst case for any ANN index (see bench/store.py --data uniform) and
    makes recall depend on the random index build; real chunks cluster by topic.
    """
    n, dim = table.num_rows, centers.shape[1]
    points = centers[rng.integers(0, len(centers), n)] + 0.35 * rng.standard_normal((n, dim))
    field = table.schema.field("vector")
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(points.ravel(), pa.float32()), dim)
    return table.set_column(table.schema.get_field_index("vector"), field, vectors.cast(field.type))


def test_ann_index_recall(tmp_path: Path) -> None:
    """Past index_threshold the IVF_HNSW_SQ index serves queries with recall@10 >= 0.9."""
    n, dim = 3000, 64
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((30, dim))
    store = LanceStore(path=tmp_path, model="m", dim=dim, index_threshold=2000, batch_size=1000)
    store.upsert(_clustered(make_objects("a", 1500, dim), centers, rng))
    assert not store.has_index()  # below the threshold: exact search only
    store.upsert(_clustered(make_objects("a", n - 1500, dim, start=1500), centers, rng))
    assert store.has_index()
    recalls = []
    for _ in range(30):
        q = (centers[rng.integers(0, len(centers))] + 0.35 * rng.standard_normal(dim)).astype(
            np.float32
        )
        exact = {h.id: h.score for h in store.search(q, k=10, exact=True)}
        approx = store.search(q, k=10)
        assert len(approx) == 10
        recalls.append(len(exact.keys() & {h.id for h in approx}) / 10)
        # scores are exact cosine similarities even through the quantised index
        for h in approx:
            if h.id in exact:
                assert h.score == pytest.approx(exact[h.id], abs=1e-4)
    assert np.mean(recalls) >= 0.9, recalls
    # objects added after the index was built are still found (scanned until the next refresh)
    late = make_objects("late", 5, dim)
    store.upsert(late)
    vec = late.column("vector")[2].values.to_numpy()
    assert store.search(vec, k=1)[0].id == late.column("id")[2].as_py()


def test_index_refreshes_when_many_rows_are_unindexed(tmp_path: Path) -> None:
    dim = 32
    store = LanceStore(path=tmp_path, model="m", dim=dim, index_threshold=1000, fold_in_rows=300)
    store.upsert(make_objects("a", 1000, dim))
    name = store._index_name()
    assert store._table.index_stats(name).num_indexed_rows == 1000
    store.upsert(make_objects("a", 400, dim, start=1000))  # >= fold_in_rows unindexed: folded in
    assert store._table.index_stats(name).num_unindexed_rows == 0


def _info(store: LanceStore) -> IndexInfo:
    info = store.index_info()
    assert info is not None
    return info


def _finds_itself(store: LanceStore, objects: pa.Table, row: int) -> bool:
    vector = objects.column("vector")[row].values.to_numpy()
    hit = store.search(vector, k=1)[0]
    return (hit.id, hit.text) == (
        objects.column("id")[row].as_py(),
        objects.column("text")[row].as_py(),
    )


def test_small_upserts_never_retrain_the_index(tmp_path: Path) -> None:
    """Built once at the threshold; later small upserts (changed and new chunks) leave the trained
    index alone and are searchable at once; enough of them are folded in as a delta segment;
    only a table that has outgrown its index is retrained."""
    dim = 16
    store = LanceStore(path=tmp_path, model="m", dim=dim, index_threshold=1000, fold_in_rows=200)
    store.upsert(make_objects("a", 999, dim))
    assert store.index_info() is None  # one row short of the threshold: exact search only
    store.upsert(make_objects("a", 1, dim, start=999))
    built = _info(store)
    assert (built.segments, built.indexed_rows, built.unindexed_rows) == (1, 1000, 0)

    changed = make_objects("a", 100, dim, version="v2")  # same ids, new text and vectors
    fresh = make_objects("b", 99, dim)
    assert store.upsert(changed).updated == 100
    assert store.upsert(fresh).inserted == 99
    after = _info(store)
    assert after.trained_at == built.trained_at and after.segments == 1  # not rebuilt
    assert after.unindexed_rows == 199  # one short of fold_in_rows: scanned exactly
    assert _finds_itself(store, changed, 7) and _finds_itself(store, fresh, 42)

    more = make_objects("b", 1, dim, start=99, version="v3")  # 200 outside: folded in
    store.upsert(more)
    folded = _info(store)
    assert folded.trained_at == built.trained_at  # same centroids, a delta segment added
    assert (folded.segments, folded.unindexed_rows) == (2, 0)
    assert _finds_itself(store, changed, 7) and _finds_itself(store, more, 0)
    assert store.count() == 1100

    grown = make_objects("c", 1100, dim)  # as many rows outside the index as inside: retrain
    store.upsert(grown)
    retrained = _info(store)
    assert retrained.trained_at != built.trained_at
    assert (retrained.segments, retrained.indexed_rows, retrained.unindexed_rows) == (1, 2200, 0)
    assert _finds_itself(store, grown, 5)


def _index(indexed: int, unindexed: int, segments: int = 1) -> IndexInfo:
    return IndexInfo(
        trained_at=None, segments=segments, indexed_rows=indexed, unindexed_rows=unindexed
    )


def test_index_rule_boundaries() -> None:
    """build at the threshold; fold in at fold_in_rows; retrain once the rows outside the index
    reach those inside, or the segments reach max_segments."""
    rule = {"index_threshold": 1000, "fold_in_rows": 100, "max_segments": 4}
    assert index_action(rows=999, index=None, **rule) == "none"
    assert index_action(rows=1000, index=None, **rule) == "build"
    assert index_action(rows=1099, index=_index(1000, 99), **rule) == "none"
    assert index_action(rows=1100, index=_index(1000, 100), **rule) == "fold_in"
    assert index_action(rows=1999, index=_index(1000, 999), **rule) == "fold_in"
    assert index_action(rows=2000, index=_index(1000, 1000), **rule) == "retrain"
    assert index_action(rows=1100, index=_index(1000, 100, segments=3), **rule) == "fold_in"
    assert index_action(rows=1100, index=_index(1000, 100, segments=4), **rule) == "retrain"
    # few rows outside the index never retrain, however many segments
    assert index_action(rows=1050, index=_index(1000, 50, segments=9), **rule) == "none"


def test_pandas_round_trip_types(tmp_path: Path) -> None:
    """Objects rebuilt from pandas (object columns, ns timestamps) are cast, not refused."""
    objects = make_objects("a", 4, 8)
    df = objects.to_pandas()
    rebuilt = pa.Table.from_pandas(df, preserve_index=False)
    store = open_store(model="m", dim=8, lance_path=tmp_path)
    assert store.upsert(rebuilt).inserted == 4
    assert os.path.isdir(tmp_path)


def test_many_small_fragments_are_compacted(tmp_path: Path) -> None:
    store = LanceStore(path=tmp_path, model="m", dim=8, batch_size=5, max_small_fragments=4)
    objects = make_objects("a", 40, 8)
    store.upsert(objects)  # 8 batches -> 8 fragments -> compacted at the end
    assert store._table.stats()["fragment_stats"]["num_fragments"] <= 4
    assert store.count() == 40
    assert store.upsert(objects).unchanged == 40


def test_a_table_written_before_provenance_keeps_working(tmp_path: Path) -> None:
    """A table of the earlier schema (no run_id / message_id): read-only use (search) reads it
    as it is, with no run recorded; the first writable open adds the two columns (null), and
    new writes name their run beside the old objects."""
    from qpipe_dagster.store import with_trace

    old = make_objects("alpha", 6, 8)
    db = lancedb.connect(str(tmp_path))
    db.create_table(collection_name("m", 8), data=old, schema=objects_schema(8))
    query = old.column("vector").combine_chunks().flatten().to_numpy()[:8]

    reader = open_store(model="m", dim=8, lance_path=tmp_path, create=False)
    hit = reader.search(query, k=1)[0]
    assert hit.id == old.column("id")[0].as_py() and hit.run_id is None
    assert reader.count_by_run("alpha") == {None: 6}
    assert "run_id" not in db.open_table(collection_name("m", 8)).schema.names  # unchanged

    writer = open_store(model="m", dim=8, lance_path=tmp_path)
    assert {"run_id", "message_id"} <= set(db.open_table(collection_name("m", 8)).schema.names)
    assert writer.count_by_run("alpha") == {None: 6}
    new = with_trace(make_objects("alpha", 2, 8, start=6), run_id="r-new", message_id="m-1")
    both = pa.concat_tables([old, new], promote_options="default")
    assert writer.upsert(both).inserted == 2  # the old rows are unchanged: not rewritten
    assert writer.count_by_run("alpha") == {None: 6, "r-new": 2}
    assert writer.search(query, k=1)[0].run_id is None
    # a second writer opening the evolved table changes nothing more
    assert open_store(model="m", dim=8, lance_path=tmp_path).count() == 8
