"""Model rotation covers trials: `qpipe reembed` re-embeds the trial objects into the new
collection (trial search works after it), and `qpipe models drop` removes the old one."""

from __future__ import annotations

import json

import polars as pl
import pytest

from qpipe_dagster.backtest.trials import trial_concept
from qpipe_dagster.cli import main
from qpipe_dagster.embed.encoder import Encoder
from qpipe_dagster.store.base import open_store
from qpipe_dagster.store.objects import VectorStoreError
from qpipe_dagster.trials.pipeline import store_trials
from qpipe_dagster.trials.store import TrialStore
from qpipe_dagster.trials.vectors import similar
from qpipe_dagster_tests.trials.conftest import make_run


def test_reembed_moves_trials_and_drop_removes_the_old_collection(
    dagster_home, monkeypatch, capsys
) -> None:
    for var in (
        "QPIPE_EMBED_MODEL",
        "QPIPE_EMBED_TRUNCATE_DIM",
        "WEAVIATE_URL",
        "QPIPE_LANCE_PATH",
    ):
        monkeypatch.delenv(var, raising=False)
    old = Encoder()
    lance = dagster_home / "qpipe" / "vectors"
    vectors = open_store(model=old.model_id, dim=old.dim, lance_path=lance)
    run = make_run("rotate")
    store_trials(run, TrialStore(), top_n=5, vector_store=vectors, encoder=old)
    vectors.close()

    assert main(["reembed", "--model", "all-MiniLM-L6-v2", "--truncate-dim", "128"]) == 0
    assert "search now uses all-MiniLM-L6-v2@128" in capsys.readouterr().out
    new = Encoder(truncate_dim=128)
    moved = open_store(model=new.model_id, dim=128, lance_path=lance, create=False)
    try:
        assert moved.count(trial_concept("rotate")) == 5
        row = TrialStore().frame("rotate").row(0, named=True)
        assert similar(row, moved, new.encode, k=3)
    finally:
        moved.close()

    trial_id = TrialStore().frame("rotate").filter(pl.col("embedded"))["id"][0]
    assert main(["trials", "similar", trial_id[:10], "-k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert (
        len(hits) == 2 and all(h["label"] for h in hits) and trial_id not in [h["id"] for h in hits]
    )

    # the active model's collection is never dropped
    assert main(["models", "drop", "--model", "all-MiniLM-L6-v2", "--truncate-dim", "128"]) == 2
    assert "is the active model" in capsys.readouterr().err
    assert main(["models", "drop", "--model", "all-MiniLM-L6-v2", "--dim", "384"]) == 0
    assert "would drop lancedb collection Chunks_all_minilm_l6_v2_d384 (5 objects)" in (
        capsys.readouterr().out
    )
    assert main(["models", "drop", "--model", "all-MiniLM-L6-v2", "--dim", "384", "--yes"]) == 0
    assert "dropped lancedb collection" in capsys.readouterr().out
    with pytest.raises(VectorStoreError, match="has no collection"):
        open_store(model=old.model_id, dim=old.dim, lance_path=lance, create=False)
    assert main(["models", "drop", "--model", "all-MiniLM-L6-v2"]) == 2
    assert "--dim is required" in capsys.readouterr().err
