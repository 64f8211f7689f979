"""sync_concept on a real store: a concept ends with exactly its current chunks."""

from __future__ import annotations

from qpipe_dagster.store.sync import sync_concept
from qpipe_dagster_tests.store.store_testdata import make_objects


def test_sync_upserts_deletes_vanished_chunks_and_counts(backend) -> None:
    store = backend.open(dim=8)
    other = make_objects("other", 3, 8)
    sync_concept(store, other, "other")
    first = sync_concept(store, make_objects("demo", 6, 8), "demo")
    assert (first.counts.inserted, first.deleted, first.total) == (6, 0, 6)
    assert first.seconds >= 0
    assert first.figures() == {"inserted": 6, "updated": 0, "unchanged": 0, "deleted": 0,
                               "objects_for_concept": 6}  # fmt: skip
    # two chunks vanish, two change: the store holds the four current ones, "other" untouched
    now = make_objects("demo", 4, 8, version="v2")
    again = sync_concept(store, now, "demo")
    assert (again.counts.inserted, again.counts.updated, again.deleted, again.total) == (0, 4, 2, 4)
    assert store.ids("demo") == set(now.column("id").to_pylist())
    assert store.count("other") == 3
