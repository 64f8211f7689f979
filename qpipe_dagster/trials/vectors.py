"""Trials as vector-store objects, and "trials like this one" through the store contract.

Only the trials worth reading (each sweep's top recommendations) are embedded; any trial,
embedded or not, can be the query, because its description is encoded on the fly. Objects
live under the concept key ``<concept>:trials`` (so page-chunk syncs never touch them) with
``url = qpipe-trial://<concept>/<trial id>``, which maps a hit back to the trial store. The
code uses only `store.base.VectorStore`, so LanceDB and Weaviate behave the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from qpipe_dagster.backtest.trials import TRIALS_VERSION, describe_trial, trial_concept
from qpipe_dagster.store.objects import content_hash, object_uuid, stored_schema

URL_PREFIX = "qpipe-trial://"


def trial_url(concept: str, trial_id: str) -> str:
    return f"{URL_PREFIX}{concept}/{trial_id}"


def trial_id_of(url: str) -> str | None:
    """The trial id a stored object points at, or None for an object of another kind."""
    if not url.startswith(URL_PREFIX):
        return None
    return url.rsplit("/", 1)[-1] or None


def describe(row: dict) -> str:
    """`backtest.trials.describe_trial` plus the overfitting evidence, in words."""
    text = describe_trial({**row, "strategy": row["family"]}, row["concept"], row.get("symbol"))

    def num(v: object) -> str:
        ok = isinstance(v, int | float) and math.isfinite(v)
        return f"{float(v):.2f}" if ok else "n/a"  # pyright: ignore[reportArgumentType]

    return (
        f"{text} Deflated Sharpe ratio {num(row.get('dsr'))}, probability of backtest "
        f"overfitting {num(row.get('pbo'))}, {row.get('bar_interval', '')} bars."
    )


def trial_objects(
    rows: list[dict],
    *,
    encode: Callable[[list[str]], np.ndarray],
    model: str,
    now: datetime | None = None,
) -> pa.Table:
    """Objects table (`store.objects.stored_schema`) for trial rows of the trial store."""
    texts = [describe(r) for r in rows]
    vectors = np.asarray(encode(texts), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise ValueError(f"encode returned shape {vectors.shape} for {len(texts)} texts")
    dim = int(vectors.shape[1]) if len(texts) else 1
    keys = [trial_concept(r["concept"]) for r in rows]
    urls = [trial_url(r["concept"], r["id"]) for r in rows]
    n = len(rows)
    stamp = now or datetime.now(UTC)
    return pa.Table.from_arrays(
        [
            pa.array([object_uuid(k, u, 0) for k, u in zip(keys, urls, strict=True)], pa.string()),
            pa.array(keys, pa.string()),
            pa.array(urls, pa.string()),
            pa.array([r["label"] for r in rows], pa.string()),
            pa.array([0] * n, pa.int32()),
            pa.array(texts, pa.large_string()),
            pa.array([content_hash(t) for t in texts], pa.string()),
            pa.array([stamp] * n, pa.timestamp("us", tz="UTC")),
            pa.array([TRIALS_VERSION] * n, pa.string()),
            pa.array([model] * n, pa.string()),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
            # the run (and message) that produced each trial, as the trial store recorded it
            pa.array([r.get("run_id") for r in rows], pa.string()),
            pa.array([r.get("message_id") for r in rows], pa.string()),
        ],
        schema=stored_schema(dim),
    )


def similar(
    row: dict,
    store: object,
    encode: Callable[[list[str]], np.ndarray],
    *,
    k: int = 5,
    concept: str | None = None,
) -> list[tuple[str, float]]:
    """(trial id, cosine score) of the stored trial objects nearest to ``row``, itself left
    out; within ``concept``'s trials when given, else the row's own concept."""
    vector = np.asarray(encode([describe(row)]), dtype=np.float32)[0]
    key = trial_concept(concept or row["concept"])
    hits = store.search(vector, k=k + 1, concept=key)  # type: ignore[attr-defined]
    out = []
    for h in hits:
        tid = trial_id_of(h.url)
        if tid and tid != row["id"]:
            out.append((tid, float(h.score)))
    return out[:k]


def reembed_trials(
    encoder: object,
    store: object,
    trial_store: object,
    *,
    concepts: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, int]:
    """Re-embed every concept's embedded trials (the `embedded` flag of the trial store) into
    ``store`` (the new model's collection) and drop that concept's other trial objects there,
    so "trials like this one" answers after a model rotation. Rejected trials are left out."""
    import polars as pl

    report: dict[str, int] = {}
    for concept in concepts or trial_store.concepts():  # type: ignore[attr-defined]
        df = trial_store.frame(concept)  # type: ignore[attr-defined]
        if df.height == 0 or "embedded" not in df.columns:
            continue
        rows = df.filter(pl.col("embedded") & (pl.col("status") != "rejected")).to_dicts()
        if not rows:
            continue
        objects = trial_objects(rows, encode=encoder.encode, model=encoder.model_id)  # type: ignore[attr-defined]
        store.upsert(objects)  # type: ignore[attr-defined]
        store.delete_missing(trial_concept(concept), set(objects.column("id").to_pylist()))  # type: ignore[attr-defined]
        report[concept] = objects.num_rows
        log(f"{trial_concept(concept)}: {objects.num_rows} trials -> {store.collection}")  # type: ignore[attr-defined]
    return report
