"""'Trials like this one' through the vector-store contract: LanceDB always, Weaviate when
WEAVIATE_URL is set (the `backend` fixture of this folder)."""

from __future__ import annotations

import polars as pl

from qpipe_dagster.backtest.trials import trial_concept
from qpipe_dagster.embed.encoder import Encoder
from qpipe_dagster.trials.pipeline import store_trials
from qpipe_dagster.trials.store import TrialStore
from qpipe_dagster.trials.vectors import similar, trial_id_of
from qpipe_dagster_tests.trials.conftest import make_run


def test_similar_trials_come_back_from_the_store(backend, tmp_path) -> None:
    enc = Encoder()
    vectors = backend.open(model=enc.model_id, dim=enc.dim)
    run = make_run("simtest")
    trials = TrialStore(tmp_path / "trials")
    counts, stored = store_trials(run, trials, top_n=8, vector_store=vectors, encoder=enc)
    assert stored == 8 and counts.inserted == run.trials.num_rows
    df = trials.frame()
    embedded = df.filter(pl.col("embedded"))
    assert embedded.height == 8
    assert vectors.count(trial_concept("simtest")) == 8
    row = embedded.row(0, named=True)
    hits = similar(row, vectors, enc.encode, k=3)
    assert len(hits) == 3 and row["id"] not in {h for h, _ in hits}
    assert set(h for h, _ in hits) <= set(embedded["id"])
    # a trial that was not embedded can be the query too
    other = df.filter(~pl.col("embedded")).row(0, named=True)
    assert similar(other, vectors, enc.encode, k=2)
    # a re-run with fewer objects drops the rest of the concept's trial objects
    counts, stored = store_trials(run, trials, top_n=3, vector_store=vectors, encoder=enc)
    assert counts.skipped == run.trials.num_rows and stored == 3
    ids = {trial_id_of(h.url) for h in vectors.search(enc.encode(["trial"])[0], k=10,
                                                       concept=trial_concept("simtest"))}  # fmt: skip
    assert len(ids) == 3 and trials.frame().filter(pl.col("embedded")).height == 3
