"""Robust recommendations from a trials table: strict filters, named relaxations, tie-breaks.

One ranking serves `qpipe recommend`, the `strategy_recommendations` asset and the best set
`backtest_results` reports, so the UI and the CLI never disagree.

* Score: the in-sample objective averaged over the set and its grid neighbours
  (``plateau_<objective>``), so a plateau beats an isolated spike.
* Hard filters (never relaxed): status rejected or archived, another family/concept/symbol,
  no finite score or no trade.
* Strict filters (defaults in `Filters`): out-of-sample required (at least one OOS trade and
  a positive OOS objective), DSR >= 0.95, at least 10 trades over the whole period, and the
  optional maximum drawdown.
* Relaxations, applied cumulatively in this fixed order until something passes:
  ``min_trades`` halved, ``max_drawdown`` widened by half, ``require_oos`` dropped,
  ``min_dsr`` lowered to 0.5. Each one used is named in ``reasons`` (status ``degraded``).
* Tie-breaks, in order: score (desc), status (promoted before candidate), schema version
  (newer first), promoted_at (newer first), created_at (newer first), id (ascending).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace

import polars as pl

OBJECTIVES: tuple[str, ...] = ("sharpe", "sortino", "total_return", "calmar")
FAMILIES: tuple[str, ...] = ("ma_crossover", "bollinger", "rsi")
STATUSES: tuple[str, ...] = ("candidate", "promoted", "rejected", "archived")
RELAXATIONS: tuple[str, ...] = ("min_trades", "max_drawdown", "require_oos", "min_dsr")
DSR_FLOOR = 0.5  # the last relaxation: "more likely than not" beats the expected max of luck
OOS_KEYS = ("sharpe", "sortino", "total_return", "calmar", "max_drawdown", "trade_count")


@dataclass(frozen=True)
class Filters:
    """The strict filters; `relax` returns the next, looser settings."""

    require_oos: bool = True
    min_dsr: float | None = 0.95
    min_trades: int = 10
    max_drawdown: float | None = None  # a positive fraction: 0.3 = at most a 30 % fall

    def relax(self, name: str) -> tuple[Filters, str] | None:
        """(looser filters, what changed) for relaxation ``name``, or None if nothing to relax."""
        if name == "min_trades" and self.min_trades > 1:
            new = max(1, self.min_trades // 2)
            return replace(self, min_trades=new), f"min_trades {self.min_trades} -> {new}"
        if name == "max_drawdown" and self.max_drawdown is not None and self.max_drawdown < 1:
            new = min(1.0, round(self.max_drawdown * 1.5, 6))
            return replace(self, max_drawdown=new), f"max_drawdown {self.max_drawdown} -> {new}"
        if name == "require_oos" and self.require_oos:
            return replace(self, require_oos=False), "require_oos dropped"
        if name == "min_dsr" and self.min_dsr is not None and self.min_dsr > DSR_FLOOR:
            return replace(self, min_dsr=DSR_FLOOR), f"min_dsr {self.min_dsr} -> {DSR_FLOOR}"
        return None


@dataclass
class Recommendation:
    status: str  # ok | degraded | none
    reasons: list[str]
    recommendations: list[dict]
    filters: Filters
    filter_rejections: dict[str, int] = field(default_factory=dict)
    relaxed_settings: dict | None = None
    considered: int = 0

    def as_json(self, debug: bool = False) -> dict:
        out = {
            "status": self.status,
            "reasons": self.reasons,
            "recommendations": self.recommendations,
            "filters": asdict(self.filters),
            "considered": self.considered,
        }
        if debug:
            out["filter_rejections"] = self.filter_rejections
            out["relaxed_settings"] = self.relaxed_settings
        return out


def _col(df: pl.DataFrame, name: str) -> pl.Expr:
    return pl.col(name) if name in df.columns else pl.lit(None, dtype=pl.Float64)


def _strict_masks(
    df: pl.DataFrame, objective: str, f: Filters, dsr: str = "dsr"
) -> dict[str, pl.Expr]:
    masks: dict[str, pl.Expr] = {
        "min_trades": pl.col("trade_count").fill_null(0) >= f.min_trades,
    }
    if f.max_drawdown is not None:
        masks["max_drawdown"] = (
            pl.col("max_drawdown").abs().fill_nan(None).fill_null(math.inf) <= f.max_drawdown
        )
    if f.require_oos:
        oos = _col(df, f"oos_{objective}")
        masks["require_oos"] = (
            (_col(df, "oos_trade_count").fill_null(0) >= 1)
            & oos.is_not_null()
            & oos.is_finite().fill_null(False)
            & (oos.fill_nan(None).fill_null(-math.inf) > 0)
        )
    if f.min_dsr is not None:
        masks["min_dsr"] = pl.col(dsr).fill_nan(None).fill_null(-1.0) >= f.min_dsr
    return masks


def hard_pool(
    df: pl.DataFrame,
    objective: str,
    *,
    family: str | None = None,
    concept: str | None = None,
    symbol: str | None = None,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Trials that can ever be recommended, and how many each hard filter removed."""
    score = f"plateau_{objective}"
    hard = {
        "family": pl.lit(True) if family is None else pl.col("family") == family,
        "concept": pl.lit(True) if concept is None else pl.col("concept") == concept,
        "symbol": pl.lit(True) if symbol is None else pl.col("symbol") == symbol,
        "status": pl.col("status").is_in(["candidate", "promoted"]),
        "no_score": pl.col(score).is_finite().fill_null(False)
        & (pl.col("trade_count").fill_null(0) > 0),
    }
    rejected = {k: int(df.select((~v).sum()).item() or 0) for k, v in hard.items()}
    keep = pl.lit(True)
    for v in hard.values():
        keep = keep & v
    return df.filter(keep), rejected


def rank(df: pl.DataFrame, objective: str) -> pl.DataFrame:
    """Sorted by the documented tie-break rules (score rounded to 12 digits so float noise
    does not decide a tie)."""
    status_rank = pl.when(pl.col("status") == "promoted").then(0).otherwise(1)
    return (
        df.with_columns(
            pl.col(f"plateau_{objective}").round(12).alias("_score"),
            status_rank.alias("_status"),
        )
        .sort(
            ["_score", "_status", "schema_version", "promoted_at", "created_at", "id"],
            descending=[True, False, True, True, True, False],
            nulls_last=True,
        )
        .drop(["_score", "_status"])
    )


def _num(v: object) -> float | int | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return v if math.isfinite(v) else None


def to_item(row: dict, objective: str, dsr: str = "dsr") -> dict:
    """One recommendation with its evidence (JSON-safe: NaN/inf become null)."""
    params = row["params"]
    return {
        "id": row["id"],
        "family": row["family"],
        "label": row["label"],
        "params": json.loads(params) if isinstance(params, str) else params,
        "objective": objective,
        "score": _num(row[f"plateau_{objective}"]),
        "in_sample": _num(row.get(f"is_{objective}")),
        "dsr": _num(row[dsr]),
        "pbo": _num(row["pbo"]),
        "oos": {k: _num(row.get(f"oos_{k}")) for k in OOS_KEYS},
        "trades": _num(row["trade_count"]),
        "stability": {"drop": _num(row.get(f"drop_{objective}"))},
        "max_drawdown": _num(row["max_drawdown"]),
        "status": row["status"],
        "concept": row["concept"],
        "symbol": row["symbol"],
        "bar_interval": row.get("bar_interval"),
    }


def recommend(
    df: pl.DataFrame,
    *,
    objective: str,
    family: str | None = None,
    concept: str | None = None,
    symbol: str | None = None,
    filters: Filters | None = None,
    top: int = 5,
    dsr: str = "dsr",
) -> Recommendation:
    """Strict filters, then relaxations in `RELAXATIONS` order; status ok/degraded/none.

    ``dsr`` names the DSR column: ``dsr`` deflates by the family's trials (a choice within
    one family), ``dsr_sweep`` by the whole sweep's (a choice across families)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be one of {list(FAMILIES)}, got {family!r}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    f = filters or Filters()
    pool, hard = hard_pool(df, objective, family=family, concept=concept, symbol=symbol)
    strict = _strict_masks(pool, objective, f, dsr)
    rejections = {k: v for k, v in hard.items() if v}
    rejections.update({k: int(pool.select((~v).sum()).item() or 0) for k, v in strict.items()})
    current, used = f, []
    steps = [None, *RELAXATIONS]
    for step in steps:
        if step is not None:
            relaxed = current.relax(step)
            if relaxed is None:
                continue
            current, what = relaxed
            used.append(what)
        keep = pl.lit(True)
        for m in _strict_masks(pool, objective, current, dsr).values():
            keep = keep & m
        passed = pool.filter(keep)
        if passed.height:
            rows = rank(passed, objective).head(top).to_dicts()
            items = [to_item(r, objective, dsr) for r in rows]
            why = ", ".join(f"{k} rejected {v}" for k, v in rejections.items() if v)
            if not used:
                return Recommendation("ok", [], items, f, rejections, None, considered=pool.height)
            reasons = [f"relaxed {u}: no trial passed the stricter settings ({why})" for u in used]
            return Recommendation(
                "degraded", reasons, items, f, rejections, asdict(current), pool.height
            )
    if pool.height == 0:
        reason = f"no {family or 'any-family'} trial can be ranked by {objective}" + (
            f" ({', '.join(f'{k} removed {v}' for k, v in hard.items() if v)})" if hard else ""
        )
    else:
        reason = (
            f"no trial passed even after relaxations ({'; '.join(used) or 'none applicable'}): "
            + ", ".join(f"{k} rejected {v} of {pool.height}" for k, v in rejections.items()
                        if k in strict)
        )  # fmt: skip
    return Recommendation("none", [reason], [], f, rejections, asdict(current), pool.height)
