"""The best backtest trials as vector-store objects, so `qpipe search` finds similar trials.

Each of the top sets (by in-sample Sharpe) becomes one object whose text describes the
strategy, its parameters, the concept and its in/out-of-sample results in plain words; that
text is what gets embedded. Trials live under the concept key ``<concept>:trials`` so the
page-chunk sync of the concept (which deletes ids it no longer sees) never touches them, and
their ids are deterministic, so re-running a sweep updates trials instead of duplicating them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from qpipe_dagster.store.objects import content_hash, object_uuid, objects_schema

TRIALS_VERSION = "backtest-trials/1"
FAMILY_WORDS = {
    "ma_crossover": "moving-average crossover (long when the fast SMA crosses above the slow SMA)",
    "bollinger": "Bollinger-band reversal (buy below the lower band, sell above the upper band)",
    "rsi": "RSI threshold (buy when RSI is oversold below low, sell when overbought above high)",
}


def trial_concept(concept: str) -> str:
    """Concept key trials are stored under (kept apart from the concept's page chunks)."""
    return f"{concept}:trials"


def _pct(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{float(v) * 100:.1f}%"


def _num(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{float(v):.2f}"


def describe_trial(row: dict, concept: str, symbol: str | None = None) -> str:
    """One paragraph a person (and the embedding model) can read."""
    family = str(row["strategy"])
    market = f" on {symbol}" if symbol else ""
    text = (
        f"Backtest trial for concept '{concept}'{market}: {FAMILY_WORDS.get(family, family)}, "
        f"{row['label']}, {str(row.get('direction', 'longonly')).replace('longshort', 'long/short')}."
    )
    if "is_sharpe" in row:
        text += (
            f" In-sample Sharpe {_num(row['is_sharpe'])}, return {_pct(row['is_total_return'])};"
            f" out-of-sample Sharpe {_num(row['oos_sharpe'])},"
            f" return {_pct(row['oos_total_return'])}."
        )
    text += (
        f" Whole period: Sharpe {_num(row['sharpe'])}, return {_pct(row['total_return'])},"
        f" max drawdown {_pct(row['max_drawdown'])}, {int(row['trade_count'])} trades,"
        f" win rate {_pct(row['win_rate'])}."
    )
    return text


def top_trials(table: pa.Table, top_n: int) -> pa.Table:
    """The ``top_n`` sets by in-sample Sharpe (whole-period Sharpe without a split), finite only."""
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    key = "is_sharpe" if "is_sharpe" in table.column_names else "sharpe"
    sharpe = table.column(key).to_numpy(zero_copy_only=False)
    finite = table.filter(pa.array(np.isfinite(sharpe)))
    order = pc.sort_indices(finite, sort_keys=[(key, "descending")])
    return finite.take(order[:top_n])


def trial_objects(
    table: pa.Table,
    concept: str,
    *,
    top_n: int,
    encode: Callable[[list[str]], np.ndarray],
    model: str,
    symbol: str | None = None,
) -> pa.Table:
    """Top trials as an objects table (`store.objects.objects_schema`) ready for ``upsert``.

    ``encode`` maps texts to unit float32 vectors (e.g. `embed.encoder.Encoder.encode`);
    ``model`` is the model id stored with the vectors.
    """
    rows = top_trials(table, top_n).to_pylist()
    key = trial_concept(concept)
    texts = [describe_trial(r, concept, symbol) for r in rows]
    vectors = np.asarray(encode(texts), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise ValueError(f"encode returned shape {vectors.shape} for {len(texts)} texts")
    dim = int(vectors.shape[1]) if len(texts) else 1
    urls = [f"qpipe-trial://{concept}/{r['direction']}/{r['label']}" for r in rows]
    now = datetime.now(UTC)
    n = len(rows)
    return pa.Table.from_arrays(
        [
            pa.array([object_uuid(key, u, 0) for u in urls], pa.string()),
            pa.array([key] * n, pa.string()),
            pa.array(urls, pa.string()),
            pa.array([r["label"] for r in rows], pa.string()),
            pa.array([0] * n, pa.int32()),
            pa.array(texts, pa.large_string()),
            pa.array([content_hash(t) for t in texts], pa.string()),
            pa.array([now] * n, pa.timestamp("us", tz="UTC")),
            pa.array([TRIALS_VERSION] * n, pa.string()),
            pa.array([model] * n, pa.string()),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        ],
        schema=objects_schema(dim),
    )
