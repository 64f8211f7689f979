"""`qpipe recommend` and `qpipe trials` on a real trial store under a temporary DAGSTER_HOME,
and the ranking rules on hand-built tables."""

from __future__ import annotations

import json
from datetime import timedelta

import polars as pl
import pytest

from qpipe_dagster.cli import main
from qpipe_dagster.trials.recommend import Filters, recommend
from qpipe_dagster.trials.store import TrialStore
from qpipe_dagster_tests.trials.conftest import NOW


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QPIPE_ACTOR", "tester")
    return tmp_path / "home"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_empty_store_says_how_to_fill_it(home, capsys) -> None:
    code, out, _ = run(capsys, "recommend", "--family", "ma_crossover", "--objective", "sharpe",
                       "--json")  # fmt: skip
    body = json.loads(out)
    assert code == 1 and body["status"] == "none" and body["recommendations"] == []
    assert "empty" in body["reasons"][0] and "materialize backtest_results" in body["reasons"][0]


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--family", "macd", "--objective", "sharpe"], "--family"),
        (["--family", "rsi", "--objective", "alpha"], "--objective"),
        (["--family", "rsi", "--objective", "sharpe", "--max-drawdown", "1.5"], "--max-drawdown"),
        (["--family", "rsi", "--objective", "sharpe", "--min-trades", "0"], "--min-trades"),
        (["--family", "rsi", "--objective", "sharpe", "--min-dsr", "x"], "--min-dsr"),
        (["--family", "rsi", "--objective", "sharpe", "--top", "0"], "--top"),
        (["--family", "rsi", "--objective", "sharpe", "--concept", "../etc"], "--concept"),
        (["--objective", "sharpe"], "--family"),
    ],
)
def test_bad_arguments_are_usage_errors_naming_the_option(home, capsys, argv, option) -> None:
    code, _, err = run(capsys, "recommend", *argv)
    assert code == 2 and option in err


def test_recommend_json_and_review_workflow(home, capsys, trial_run) -> None:
    store = TrialStore()
    assert store.root == home.resolve() / "qpipe" / "trials"
    store.ingest(trial_run.trials, now=NOW)
    argv = (
        "recommend",
        "--family",
        "ma_crossover",
        "--objective",
        "sharpe",
        "--json",
        "--top",
        "3",
    )
    code, out, _ = run(capsys, *argv)
    body = json.loads(out)
    assert code == 0 and body["status"] in ("ok", "degraded")
    assert set(body) >= {"status", "reasons", "recommendations"}
    first = body["recommendations"][0]
    for key in ("family", "params", "objective", "dsr", "pbo", "oos", "trades", "stability"):
        assert key in first, key
    assert first["family"] == "ma_crossover" and set(first["params"]) == {"fast", "slow"}
    assert "filter_rejections" not in body
    # reject the top set: it is never recommended again, and show lists the change
    code, out, _ = run(capsys, "trials", "reject", first["id"][:10], "--reason", "curve-fit")
    assert code == 0 and "candidate -> rejected" in out and "tester" in out
    code, out, _ = run(capsys, *argv, "--debug")
    body2 = json.loads(out)
    assert first["id"] not in [r["id"] for r in body2["recommendations"]]
    assert "filter_rejections" in body2 and "relaxed_settings" in body2
    assert body2["filter_rejections"]["status"] == 1
    # re-ingesting the same sweep keeps it rejected
    assert store.ingest(trial_run.trials, now=NOW + timedelta(hours=1)).skipped
    assert store.find(first["id"])["status"] == "rejected"
    code, out, _ = run(capsys, "trials", "show", first["id"], "--json")
    shown = json.loads(out)
    assert shown["trial"]["status"] == "rejected"
    assert [(h["to_status"], h["actor"], h["reason"]) for h in shown["history"]] == [
        ("rejected", "tester", "curve-fit")
    ]
    code, out, _ = run(capsys, "trials", "promote", body2["recommendations"][-1]["id"])
    assert code == 0 and "-> promoted" in out
    code, out, _ = run(capsys, "trials", "list", "--status", "rejected", "--json")
    assert [r["id"] for r in json.loads(out)] == [first["id"]]
    code, out, _ = run(capsys, "trials", "list", "--min-dsr", "0.95", "--max-pbo", "1", "--json",
                       "--limit", "1000")  # fmt: skip
    strong = json.loads(out)
    assert strong and all(r["dsr"] >= 0.95 for r in strong)
    assert len(strong) == int((pl.from_arrow(trial_run.trials)["dsr"] >= 0.95).sum())
    code, _, err = run(capsys, "trials", "list", "--max-pbo", "2")
    assert code == 2 and "--max-pbo" in err
    code, _, err = run(capsys, "trials", "reject", first["id"])
    assert code == 2 and "--reason" in err
    code, _, err = run(capsys, "trials", "show", "zzzzzzzz")
    assert code == 2 and "no trial 'zzzzzzzz'" in err


def test_trials_ingest_dry_run(home, capsys, trial_run, tmp_path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(trial_run.trials, path)
    code, out, _ = run(capsys, "trials", "ingest", str(path), "--dry-run")
    n = trial_run.trials.num_rows
    assert code == 0 and f"would be ingested: inserted {n}," in out
    assert TrialStore().count() == 0
    code, out, _ = run(capsys, "trials", "ingest", str(path))
    assert code == 0 and TrialStore().count() == n
    code, out, _ = run(capsys, "trials", "ingest", str(path))
    assert f"skipped {n}" in out


def frame(rows: list[dict]) -> pl.DataFrame:
    base = {
        "concept": "c", "symbol": "S", "bar_interval": "1h", "family": "rsi", "label": "x",
        "params": "{}", "status": "candidate", "schema_version": 1, "promoted_at": None,
        "created_at": NOW, "plateau_sharpe": 1.0, "is_sharpe": 1.0, "oos_sharpe": 1.0,
        "oos_trade_count": 5, "trade_count": 20, "max_drawdown": -0.1, "dsr": 0.99, "pbo": 0.1,
        "drop_sharpe": 0.0,
    }  # fmt: skip
    return pl.DataFrame([{**base, **r} for r in rows])


def test_tie_breaks_follow_the_documented_order() -> None:
    later = NOW + timedelta(days=1)
    df = frame([
        {"id": "a6", "plateau_sharpe": 2.0},
        {"id": "a5", "created_at": later},
        {"id": "a4", "schema_version": 2},
        {"id": "a3", "status": "promoted", "promoted_at": NOW},
        {"id": "a2", "status": "promoted", "promoted_at": later},
        {"id": "a1"},
        {"id": "a0"},
    ])  # fmt: skip
    rec = recommend(df, objective="sharpe", family="rsi", top=10)
    assert [r["id"] for r in rec.recommendations] == ["a6", "a2", "a3", "a4", "a5", "a0", "a1"]


def test_relaxations_in_fixed_order_with_reasons() -> None:
    df = frame([
        {"id": "few", "trade_count": 6, "dsr": 0.99},
        {"id": "deep", "trade_count": 30, "max_drawdown": -0.4, "dsr": 0.99},
        {"id": "no_oos", "oos_trade_count": 0, "dsr": 0.97},
        {"id": "weak", "dsr": 0.6, "plateau_sharpe": 3.0},
        {"id": "gone", "status": "rejected", "plateau_sharpe": 9.0},
    ])  # fmt: skip
    strict = Filters(max_drawdown=0.3)
    rec = recommend(df, objective="sharpe", filters=strict)
    assert rec.status == "degraded" and [r["id"] for r in rec.recommendations] == ["few"]
    assert rec.reasons[0].startswith("relaxed min_trades 10 -> 5")
    assert rec.filter_rejections == {"status": 1, "min_trades": 1, "max_drawdown": 1,
                                     "require_oos": 1, "min_dsr": 1}  # fmt: skip
    assert rec.relaxed_settings["min_trades"] == 5
    rec = recommend(df.filter(pl.col("id") != "few"), objective="sharpe", filters=strict)
    assert [r["id"] for r in rec.recommendations] == ["deep"]
    assert [x.split(":")[0] for x in rec.reasons] == [
        "relaxed min_trades 10 -> 5", "relaxed max_drawdown 0.3 -> 0.45"]  # fmt: skip
    rec = recommend(df.filter(pl.col("id").is_in(["no_oos", "weak"])), objective="sharpe")
    assert [r["id"] for r in rec.recommendations] == ["no_oos"]  # require_oos before min_dsr
    assert rec.reasons[-1].startswith("relaxed require_oos dropped")
    rec = recommend(df.filter(pl.col("id") == "weak").with_columns(dsr=pl.lit(0.2)),
                    objective="sharpe")  # fmt: skip
    assert rec.status == "none" and rec.recommendations == []
    assert "min_dsr rejected 1 of 1" in rec.reasons[0]
    ok = recommend(df.filter(pl.col("id") == "deep"), objective="sharpe")
    assert ok.status == "ok" and ok.reasons == []
