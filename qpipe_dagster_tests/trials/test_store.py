"""The trial store on real Parquet files: idempotent ingest, archive/unarchive, review history."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from qpipe_dagster.trials.store import TrialStore, TrialStoreError
from qpipe_dagster_tests.trials.conftest import NOW, make_run


def test_ingest_is_idempotent_and_dry_run_writes_nothing(trial_run, tmp_path) -> None:
    store = TrialStore(tmp_path / "trials")
    n = trial_run.trials.num_rows
    dry = store.ingest(trial_run.trials, dry_run=True, now=NOW)
    assert dry.inserted == n and store.count() == 0 and store.concepts() == []
    first = store.ingest(trial_run.trials, now=NOW)
    assert first.as_dict() == {"inserted": n, "updated": 0, "skipped": 0, "archived": 0,
                               "unarchived": 0, "error": 0}  # fmt: skip
    again = store.ingest(trial_run.trials, now=NOW + timedelta(hours=1))
    assert again.skipped == n and again.inserted == again.updated == 0
    df = store.frame()
    assert df.height == n and df["id"].n_unique() == n
    row = df.row(0, named=True)
    for col in ("concept", "symbol", "bar_interval", "family", "direction", "params", "sharpe",
                "is_sharpe", "oos_sharpe", "n_trials", "price_hash", "code_version", "status",
                "dsr", "pbo", "plateau_sharpe", "drop_calmar"):  # fmt: skip
        assert row[col] is not None, col
    assert row["status"] == "candidate" and row["n_trials"] == n and row["bar_interval"] == "1h"
    assert row["created_at"] == NOW  # a skip keeps the first ingest's time


def test_new_content_updates_and_keeps_review_status(tmp_path) -> None:
    store = TrialStore(tmp_path / "trials")
    base = make_run()
    store.ingest(base.trials, now=NOW)
    ids = base.trials.column("id").to_pylist()
    store.set_status(ids[0], "rejected", reason="curve-fit", actor="alice", now=NOW)
    store.set_status(ids[1], "promoted", reason="looks robust", actor="bob", now=NOW)
    dearer = make_run(fees=0.002)  # new costs: same ids, new content hash
    counts = store.ingest(dearer.trials, now=NOW + timedelta(days=1))
    assert counts.updated == len(ids) and counts.inserted == 0
    df = store.frame().filter(pl.col("id").is_in(ids[:2])).sort("id")
    status = dict(zip(df["id"], df["status"], strict=True))
    assert status[ids[0]] == "rejected" and status[ids[1]] == "promoted"
    hist = store.history()
    assert hist.height == 2
    ev = store.history(ids[0]).row(0, named=True)
    assert (ev["from_status"], ev["to_status"], ev["actor"], ev["reason"]) == (
        "candidate", "rejected", "alice", "curve-fit")  # fmt: skip
    assert ev["at"] == NOW


def test_a_narrower_sweep_archives_and_the_old_one_unarchives(tmp_path) -> None:
    store = TrialStore(tmp_path / "trials")
    wide, narrow = make_run(fast_max=30), make_run(fast_max=14)
    store.ingest(wide.trials, now=NOW)
    wide_ids = set(wide.trials.column("id").to_pylist())
    gone = wide_ids - set(narrow.trials.column("id").to_pylist())
    assert gone
    rejected = sorted(gone)[0]
    store.set_status(rejected, "rejected", reason="bad", actor="alice", now=NOW)
    promoted = sorted(gone)[1]
    store.set_status(promoted, "promoted", reason="good", actor="alice", now=NOW)
    counts = store.ingest(narrow.trials, now=NOW + timedelta(hours=1))
    # narrow's sets are the same trials (same prices, costs, split): skipped, not updated
    assert counts.archived == len(gone) - 1  # the rejected one stays rejected
    st = dict(store.frame().select("id", "status").iter_rows())
    assert st[rejected] == "rejected" and st[promoted] == "archived"
    back = store.ingest(wide.trials, now=NOW + timedelta(hours=2))
    assert back.unarchived == len(gone) - 1 and back.archived == 0
    st = dict(store.frame().select("id", "status").iter_rows())
    assert st[promoted] == "promoted" and st[rejected] == "rejected"
    reasons = store.history(promoted)["to_status"].to_list()
    assert reasons == ["promoted", "archived", "promoted"]


def test_bad_rows_are_errors_and_review_errors_name_the_problem(trial_run, tmp_path) -> None:
    store = TrialStore(tmp_path / "trials")
    df = pl.from_arrow(trial_run.trials)
    broken = pl.concat(
        [
            df.head(3),
            df.head(1),  # a duplicate id
            df.slice(3, 1).with_columns(pl.lit(None, pl.Utf8).alias("params")),
            df.slice(4, 1).with_columns(pl.lit("../x").alias("concept")),  # not a slug
        ]
    )
    counts = store.ingest(broken, now=NOW)
    assert counts.inserted == 3 and counts.error == 3
    assert store.concepts() == ["demo"]
    with pytest.raises(TrialStoreError, match="at least 6 characters"):
        store.find("abc")
    with pytest.raises(TrialStoreError, match="no trial 'ffffffffff'"):
        store.find("ffffffffff")
    with pytest.raises(TrialStoreError, match="--reason must not be empty"):
        store.set_status(df["id"][0], "rejected", reason=" ")
    with pytest.raises(TrialStoreError, match="status must be"):
        store.set_status(df["id"][0], "candidate", reason="x")
    assert store.find(df["id"][0][:8])["id"] == df["id"][0]


def test_robust_pick_is_reported_as_best(trial_run) -> None:
    ids = trial_run.trials.column("id").to_pylist()
    df = pl.from_arrow(trial_run.trials)
    if trial_run.robust:
        assert ids[trial_run.best_row] == trial_run.pick.recommendations[0]["id"]
    else:  # nothing passed across families: the best plateau score, flagged
        assert trial_run.pick.status == "none"
        plateau = df.filter(pl.col("trade_count") > 0)["plateau_sharpe"].max()
        assert df["plateau_sharpe"][trial_run.best_row] == plateau
    ev = trial_run.evidence
    assert 0 <= ev.pbo.pbo <= 1 and ev.n_effective <= trial_run.trials.num_rows


def test_trials_name_the_run_and_message_that_produced_them(tmp_path) -> None:
    """A trial carries the run (and QStash message) that last inserted or changed it; a
    re-ingest of the same content keeps them, as unchanged chunk objects do. A store file
    written before these columns existed keeps working: its trials name no run."""
    store = TrialStore(tmp_path / "trials")
    first = make_run(run_id="run-1", message_id="msg_1")
    ids = first.trials.column("id").to_pylist()
    legacy = pl.from_arrow(first.trials)
    assert isinstance(legacy, pl.DataFrame)
    store.ingest(legacy.drop("run_id", "message_id"), now=NOW)  # an earlier version's file
    assert "run_id" not in pl.read_parquet(store.data / "demo.parquet").columns
    store.ingest(first.trials, now=NOW)  # same content: skipped, still no run recorded
    assert store.frame()["run_id"].null_count() == len(ids)

    dearer = make_run(fees=0.002, run_id="run-2")  # a run from the UI: no message
    assert store.ingest(dearer.trials, now=NOW + timedelta(days=1)).updated == len(ids)
    same = make_run(fees=0.002, run_id="run-3", message_id="msg_3")
    assert store.ingest(same.trials, now=NOW + timedelta(days=2)).skipped == len(ids)
    row = store.find(ids[0])
    assert (row["run_id"], row["message_id"]) == ("run-2", None)
