"""A sweep's sets as trial records: what each one is (its id) and what it depends on.

* ``id``: hash of what the trial *is*: concept, symbol, bar interval, family, direction and
  params. Re-running the sweep finds the same ids.
* ``content_hash``: hash of everything its numbers depend on: the price data, the code
  version, costs and the split. Same id + same content hash = nothing to write; the
  metrics are a pure function of these, so no per-row hashing of floats is needed.
* ``sweep_key``: (concept, symbol, interval, direction, family): the ids a re-run of that
  sweep no longer produces are archived by the store.
* ``run_id`` / ``message_id``: the Dagster run that produced the trial and the QStash message
  that caused it (None outside a run, or for a run from the UI, CLI or a schedule). The store
  keeps them from the run that last inserted or changed the trial, as for chunk objects.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import polars as pl
import pyarrow as pa

from qpipe_dagster.backtest.results import SweepReport
from qpipe_dagster.backtest.strategies import FAMILY_PARAMS
from qpipe_dagster.trials.evaluate import SweepEvidence

SCHEMA_VERSION = 1
STATUS_COLUMNS = {
    "status": pl.Utf8,
    "status_before_archive": pl.Utf8,
    "status_at": pl.Datetime("us", "UTC"),
    "status_by": pl.Utf8,
    "status_reason": pl.Utf8,
    "promoted_at": pl.Datetime("us", "UTC"),
}


def code_version() -> str:
    """qpipe's version plus a hash of the sweep code, so a kernel change reads as new content."""
    from qpipe_dagster.backtest import kernels, strategies
    from qpipe_dagster.trials import evaluate, returns, stats

    h = hashlib.sha256()
    for mod in (kernels, strategies, evaluate, returns, stats):
        h.update(inspect.getsource(mod).encode())
    try:
        v = version("qpipe")
    except PackageNotFoundError:
        v = "dev"
    return f"qpipe-{v}+{h.hexdigest()[:10]}"


def price_hash(ts: np.ndarray, close: np.ndarray) -> str:
    """sha256 of the bars a sweep read (timestamps and closes)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(np.asarray(ts).astype("datetime64[us]").view(np.int64)).data)
    h.update(np.ascontiguousarray(np.asarray(close, dtype=np.float64)).data)
    return h.hexdigest()


def bar_interval(ts: np.ndarray) -> str:
    """Median bar spacing as 1m / 15m / 1h / 4h / 1d, or seconds ('90s') when odd."""
    t = np.asarray(ts).astype("datetime64[s]").astype(np.int64)
    if t.shape[0] < 2:
        return "unknown"
    s = int(np.median(np.diff(t)))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def _ids(keys: list[str]) -> list[str]:
    return [hashlib.blake2b(k.encode(), digest_size=10).hexdigest() for k in keys]


def build_trials(
    report: SweepReport,
    evidence: SweepEvidence,
    *,
    concept: str,
    symbol: str,
    interval: str,
    prices: str,
    settings: dict,
    code: str | None = None,
    now: datetime | None = None,
    run_id: str | None = None,
    message_id: str | None = None,
) -> pa.Table:
    """One row per set of ``report`` with its metrics, evidence and a candidate status."""
    now = now or datetime.now(UTC)
    code = code or code_version()
    df = pl.from_arrow(report.table)
    assert isinstance(df, pl.DataFrame)
    df = df.rename({"strategy": "family"})
    df = df.with_columns(
        **{k: pl.Series(k, v) for k, v in evidence.columns.items() if k not in df.columns}
    )
    fams = []
    for run in report.runs:
        names = FAMILY_PARAMS[run.grid.family]
        fields = ", ".join(f'"{n}": {{}}' for n in names)
        fams.append(
            pl.when(pl.col("family") == run.grid.family).then(
                pl.format("{{" + fields + "}}", *[pl.col(n) for n in names])
            )
        )
    df = df.with_columns(pl.coalesce(fams).alias("params"))
    head = f"{concept}\x1f{symbol}\x1f{interval}\x1f"
    keys = (
        pl.lit(head) + pl.col("family") + "\x1f" + pl.col("direction") + "\x1f" + pl.col("params")
    )
    df = df.with_columns(keys.alias("_key"))
    fingerprint = hashlib.sha256(
        json.dumps({"prices": prices, "code": code, **settings}, sort_keys=True).encode()
    ).hexdigest()
    n = df.height
    df = df.with_columns(
        pl.Series("id", _ids(df["_key"].to_list())),
        pl.lit(fingerprint).alias("content_hash"),
        (
            pl.lit(f"{concept}/{symbol}/{interval}/") + pl.col("direction") + "/" + pl.col("family")
        ).alias("sweep_key"),
        pl.lit(fingerprint[:16]).alias("sweep_id"),
        pl.lit(SCHEMA_VERSION).alias("schema_version"),
        pl.lit(concept).alias("concept"),
        pl.lit(symbol).alias("symbol"),
        pl.lit(interval).alias("bar_interval"),
        pl.lit(n).alias("n_trials"),
        pl.lit(evidence.n_effective).alias("n_effective"),
        pl.lit(evidence.pbo.pbo if evidence.pbo else None, pl.Float64).alias("sweep_pbo"),
        pl.lit(prices).alias("price_hash"),
        pl.lit(code).alias("code_version"),
        pl.lit(json.dumps(settings, sort_keys=True)).alias("settings"),
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("created_at"),
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("updated_at"),
        pl.lit(False).alias("embedded"),
        pl.lit(run_id, pl.Utf8).alias("run_id"),
        pl.lit(message_id, pl.Utf8).alias("message_id"),
        pl.lit("candidate").alias("status"),
        *[pl.lit(None, dtype=t).alias(k) for k, t in STATUS_COLUMNS.items() if k != "status"],
    ).drop(["_key", "backend", "device", "compute_seconds"], strict=False)
    return df.to_arrow()
