"""The trial store: every evaluated parameter set, as a columnar table, with a review status.

Layout under `paths.trials_home()`: ``data/<concept>.parquet`` (one file per concept, so an
ingest rewrites only its concept), ``history.parquet`` (every status change with actor, time
and reason) and ``.lock`` (an ``flock`` held by writers; files are replaced atomically, so
readers never see half a file).

Ingest is idempotent by (id, content_hash) (`records` says what each hash covers):

* new id: inserted as ``candidate``;
* same id, same content hash: skipped;
* same id, new content hash (new prices, code or costs): updated, status kept (a rejected
  trial stays rejected, a promoted one stays promoted);
* an ``archived`` id produced again: unarchived, back to the status it had before;
* a ``candidate``/``promoted`` id of a swept ``sweep_key`` the run no longer produced:
  archived (never recommended, kept for the record);
* a row without id, family, params or concept, or an id twice in one batch: error (skipped).
"""

from __future__ import annotations

import fcntl
import getpass
import os
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa

from qpipe_dagster.settings import env_value
from qpipe_dagster.trials.recommend import FAMILIES, STATUSES

TS = pl.Datetime("us", "UTC")
HISTORY_SCHEMA = pl.Schema(
    {
        "trial_id": pl.Utf8,
        "concept": pl.Utf8,
        "from_status": pl.Utf8,
        "to_status": pl.Utf8,
        "actor": pl.Utf8,
        "at": TS,
        "reason": pl.Utf8,
    }
)
KEEP_ON_REINGEST = (
    "status",
    "status_before_archive",
    "status_at",
    "status_by",
    "status_reason",
    "promoted_at",
    "created_at",
)
# kept, like updated_at, when a re-ingest finds the same content: they name the run that last
# inserted or changed the trial (`records`)
TRACE_COLUMNS = ("run_id", "message_id")


def _with_trace_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with null provenance columns where it has none (written before they existed)."""
    missing = [pl.lit(None, pl.Utf8).alias(c) for c in TRACE_COLUMNS if c not in frame.columns]
    return frame.with_columns(missing) if missing else frame


class TrialStoreError(ValueError):
    """A request the store cannot honour; the message names the trial id or option."""


@dataclass
class IngestCounts:
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    archived: int = 0
    unarchived: int = 0
    error: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def default_actor() -> str:
    """$QPIPE_ACTOR, else the login name: who promoted or rejected a trial."""
    actor = env_value("QPIPE_ACTOR") or ""
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _valid_concept(concept: str) -> bool:
    from qpipe_dagster.concepts import ConceptError, validate_slug

    try:
        validate_slug(concept)
    except ConceptError:
        return False
    return True


def _concept_file_name(concept: str) -> str:
    from qpipe_dagster.concepts import validate_slug

    return f"{validate_slug(concept)}.parquet"


class TrialStore:
    """Trials of every sweep under ``root`` (default `paths.trials_home()`)."""

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            from qpipe_dagster.paths import trials_home

            root = trials_home()
        self.root = Path(root)
        self.data = self.root / "data"

    # -- files ---------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.data.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @staticmethod
    def _write(frame: pl.DataFrame, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        frame.write_parquet(tmp, compression="zstd", compression_level=1, statistics=False)
        os.replace(tmp, path)

    def _read_concept(self, concept: str) -> pl.DataFrame | None:
        path = self.data / _concept_file_name(concept)
        return pl.read_parquet(path) if path.exists() else None

    def concepts(self) -> list[str]:
        if not self.data.is_dir():
            return []
        return sorted(p.stem for p in self.data.glob("*.parquet"))

    def frame(self, concept: str | None = None, **equal: str | None) -> pl.DataFrame:
        """Every stored trial (of one concept when given; ``family="rsi"`` and the like keep
        rows whose column equals the value, filtered while scanning so a store of millions
        is never read whole for one family); empty frame when none."""
        names = [concept] if concept else self.concepts()
        frames = []
        for name in names:
            path = self.data / _concept_file_name(name)
            if not path.exists():
                continue
            lazy = pl.scan_parquet(path)
            for col, value in equal.items():
                if value is not None:
                    lazy = lazy.filter(pl.col(col) == value)
            frames.append(lazy.collect())
        frames = [f for f in frames if f.height]
        if not frames:
            return pl.DataFrame()
        return pl.concat(frames, how="diagonal_relaxed")

    def count(self) -> int:
        return sum(pl.scan_parquet(self.data / _concept_file_name(c)).select(pl.len()).collect().item()
                   for c in self.concepts())  # fmt: skip

    def history(self, trial_id: str | None = None) -> pl.DataFrame:
        path = self.root / "history.parquet"
        df = pl.read_parquet(path) if path.exists() else pl.DataFrame(schema=HISTORY_SCHEMA)
        return df if trial_id is None else df.filter(pl.col("trial_id") == trial_id)

    def _append_history(self, events: pl.DataFrame) -> None:
        if events.height == 0:
            return
        path = self.root / "history.parquet"
        old = pl.read_parquet(path) if path.exists() else pl.DataFrame(schema=HISTORY_SCHEMA)
        self._write(pl.concat([old, events.select(list(HISTORY_SCHEMA)).cast(HISTORY_SCHEMA)]),
                    path)  # fmt: skip

    # -- ingest --------------------------------------------------------------------------

    def ingest(
        self,
        trials: pa.Table | pl.DataFrame,
        *,
        dry_run: bool = False,
        embedded_ids: Collection[str] | None = None,
        actor: str = "ingest",
        now: datetime | None = None,
    ) -> IngestCounts:
        """Merge a sweep's trials (`records.build_trials`) into the store; see the module
        docstring for what each count means. ``dry_run`` counts without writing.
        ``embedded_ids``: the ids now stored as vector objects (for `qpipe reembed`)."""
        now = now or datetime.now(UTC)
        new = trials if isinstance(trials, pl.DataFrame) else pl.from_arrow(trials)
        assert isinstance(new, pl.DataFrame)
        counts = IngestCounts()
        if new.height == 0:
            return counts
        for col in ("id", "family", "params", "concept", "sweep_key", "content_hash"):
            if col not in new.columns:
                raise TrialStoreError(f"trials table has no {col!r} column: not built by "
                                      "qpipe_dagster.trials.records.build_trials")  # fmt: skip
        valid = (
            pl.col("id").is_not_null()
            & pl.col("params").is_not_null()
            & pl.col("concept").is_not_null()
            & pl.col("family").is_in(list(FAMILIES))
            & pl.col("id").is_first_distinct()  # an id twice in one batch: the first counts
        )
        good = new.filter(valid)
        bad_keys = [c for c in good["concept"].unique().to_list() if not _valid_concept(c)]
        if bad_keys:  # a key that is not a slug would name a file outside data/
            good = good.filter(~pl.col("concept").is_in(bad_keys))
        counts.error = new.height - good.height
        embedded = set(embedded_ids) if embedded_ids is not None else None
        events: list[pl.DataFrame] = []
        with self._locked():
            for (concept,), batch in good.group_by(["concept"], maintain_order=True):
                merged, ev = self._merge(str(concept), batch, counts, embedded, actor, now)
                events.append(ev)
                if not dry_run:
                    self._write(merged, self.data / _concept_file_name(str(concept)))
            if not dry_run:
                self._append_history(pl.concat(events) if events else pl.DataFrame())
        return counts

    def _merge(
        self,
        concept: str,
        batch: pl.DataFrame,
        counts: IngestCounts,
        embedded: set[str] | None,
        actor: str,
        now: datetime,
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        old = self._read_concept(concept)
        if embedded is not None:
            batch = batch.with_columns(pl.col("id").is_in(list(embedded)).alias("embedded"))
        if old is None or old.height == 0:
            counts.inserted += batch.height
            return batch, pl.DataFrame(schema=HISTORY_SCHEMA)
        old, batch = _with_trace_columns(old), _with_trace_columns(batch)
        prev = old.select(
            "id",
            pl.col("content_hash").alias("_hash"),
            pl.col("updated_at").alias("_updated_at"),
            pl.col("embedded").alias("_embedded"),
            *[pl.col(c).alias(f"_{c}") for c in (*KEEP_ON_REINGEST, *TRACE_COLUMNS)],
        )
        j = batch.join(prev, on="id", how="left")
        is_new = pl.col("_hash").is_null()
        was_archived = pl.col("_status") == "archived"
        same = pl.col("_hash") == pl.col("content_hash")
        flags = j.select(
            is_new.alias("new"),
            (~is_new & was_archived).alias("unarch"),
            (~is_new & ~was_archived & same).alias("skip"),
            (~is_new & ~was_archived & ~same).alias("upd"),
        )
        counts.inserted += int(flags["new"].sum())
        counts.unarchived += int(flags["unarch"].sum())
        counts.skipped += int(flags["skip"].sum())
        counts.updated += int(flags["upd"].sum())
        restored = pl.coalesce(pl.col("_status_before_archive"), pl.lit("candidate"))
        j = j.with_columns(
            pl.when(is_new).then(pl.col("status"))
            .when(was_archived).then(restored)
            .otherwise(pl.col("_status")).alias("status"),
            pl.when(is_new | was_archived).then(None)
            .otherwise(pl.col("_status_before_archive"))
            .alias("status_before_archive").cast(pl.Utf8),
            pl.when(was_archived).then(pl.lit(now)).otherwise(pl.col("_status_at"))
            .alias("status_at").cast(TS),
            pl.when(was_archived).then(pl.lit(actor)).otherwise(pl.col("_status_by"))
            .alias("status_by").cast(pl.Utf8),
            pl.when(was_archived).then(pl.lit("produced again by its sweep"))
            .otherwise(pl.col("_status_reason")).alias("status_reason").cast(pl.Utf8),
            pl.coalesce(pl.col("_promoted_at"), pl.col("promoted_at")).alias("promoted_at"),
            pl.coalesce(pl.col("_created_at"), pl.col("created_at")).alias("created_at"),
            pl.when(~is_new & same).then(pl.col("_updated_at")).otherwise(pl.col("updated_at"))
            .alias("updated_at"),
            *[pl.when(~is_new & same).then(pl.col(f"_{c}")).otherwise(pl.col(c)).alias(c)
              for c in TRACE_COLUMNS],
            (pl.col("embedded") if embedded is not None
             else pl.coalesce(pl.col("_embedded"), pl.col("embedded"))).alias("embedded"),
        )  # fmt: skip
        unarch_ev = j.filter(~is_new & was_archived).select(
            pl.col("id").alias("trial_id"),
            pl.lit(concept).alias("concept"),
            pl.lit("archived").alias("from_status"),
            pl.col("status").alias("to_status"),
            pl.lit(actor).alias("actor"),
            pl.lit(now).cast(TS).alias("at"),
            pl.lit("produced again by its sweep").alias("reason"),
        )
        j = j.drop([c for c in j.columns if c.startswith("_")])
        rest = old.filter(~pl.col("id").is_in(batch["id"].implode()))
        swept = batch["sweep_key"].unique().implode()
        to_archive = pl.col("sweep_key").is_in(swept) & pl.col("status").is_in(
            ["candidate", "promoted"]
        )
        reason = f"not produced by sweep {batch['sweep_id'][0]}"
        arch_ev = rest.filter(to_archive).select(
            pl.col("id").alias("trial_id"),
            pl.lit(concept).alias("concept"),
            pl.col("status").alias("from_status"),
            pl.lit("archived").alias("to_status"),
            pl.lit(actor).alias("actor"),
            pl.lit(now).cast(TS).alias("at"),
            pl.lit(reason).alias("reason"),
        )
        counts.archived += arch_ev.height
        rest = rest.with_columns(
            pl.when(to_archive).then(pl.col("status")).otherwise(pl.col("status_before_archive"))
            .alias("status_before_archive"),
            pl.when(to_archive).then(pl.lit("archived")).otherwise(pl.col("status"))
            .alias("status"),
            pl.when(to_archive).then(pl.lit(now)).otherwise(pl.col("status_at"))
            .cast(TS).alias("status_at"),
            pl.when(to_archive).then(pl.lit(actor)).otherwise(pl.col("status_by"))
            .alias("status_by"),
            pl.when(to_archive).then(pl.lit(reason)).otherwise(pl.col("status_reason"))
            .alias("status_reason"),
        )  # fmt: skip
        merged = pl.concat([j, rest], how="diagonal_relaxed")
        events = pl.concat([unarch_ev, arch_ev]).cast(HISTORY_SCHEMA)
        return merged, events

    # -- sweep summaries -----------------------------------------------------------------

    def record_sweep(self, concept: str, summary: dict) -> None:
        """The latest sweep's statistics of a concept (PBO and its λ distribution, N_eff):
        what `strategy_recommendations` plots; one JSON file per concept, replaced atomically."""
        import json

        folder = self.root / "sweeps"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / _concept_file_name(concept).replace(".parquet", ".json")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(summary, default=str))
        os.replace(tmp, path)

    def sweep(self, concept: str) -> dict | None:
        import json

        path = self.root / "sweeps" / _concept_file_name(concept).replace(".parquet", ".json")
        return json.loads(path.read_text()) if path.exists() else None

    # -- review --------------------------------------------------------------------------

    def find(self, trial_id: str) -> dict:
        """One trial by id or unique id prefix (at least 6 characters)."""
        if not trial_id or len(trial_id) < 6:
            raise TrialStoreError(f"trial id {trial_id!r}: give at least 6 characters of the id")
        if not self.concepts():
            raise TrialStoreError(f"no trial {trial_id!r}: the trial store is empty")
        found = [
            pl.scan_parquet(self.data / _concept_file_name(c))
            .filter(pl.col("id").str.starts_with(trial_id))
            .collect()
            for c in self.concepts()
        ]
        found = [f for f in found if f.height]
        hits = pl.concat(found, how="diagonal_relaxed") if found else pl.DataFrame({"id": []})
        if hits.height == 0:
            raise TrialStoreError(f"no trial {trial_id!r} (see `qpipe trials list`)")
        if hits.height > 1:
            raise TrialStoreError(
                f"trial id prefix {trial_id!r} matches {hits.height} trials; give more characters"
            )
        return hits.to_dicts()[0]

    def set_status(
        self,
        trial_id: str,
        status: str,
        *,
        reason: str,
        actor: str | None = None,
        now: datetime | None = None,
    ) -> dict:
        """Promote or reject (or archive) one trial; the change goes to the history."""
        if status not in STATUSES or status == "candidate":
            raise TrialStoreError(f"status must be promoted, rejected or archived, got {status!r}")
        if not reason or not reason.strip():
            raise TrialStoreError("--reason must not be empty: say why, for the history")
        now = now or datetime.now(UTC)
        actor = actor or default_actor()
        with self._locked():
            row = self.find(trial_id)
            concept = row["concept"]
            df = self._read_concept(concept)
            assert df is not None
            same = pl.col("id") == row["id"]
            df = df.with_columns(
                pl.when(same).then(pl.lit(status)).otherwise(pl.col("status")).alias("status"),
                pl.when(same).then(pl.lit(now)).otherwise(pl.col("status_at")).cast(TS)
                .alias("status_at"),
                pl.when(same).then(pl.lit(actor)).otherwise(pl.col("status_by")).alias("status_by"),
                pl.when(same).then(pl.lit(reason)).otherwise(pl.col("status_reason"))
                .alias("status_reason"),
                pl.when(same & (pl.lit(status) == "promoted")).then(pl.lit(now))
                .otherwise(pl.col("promoted_at")).cast(TS).alias("promoted_at"),
            )  # fmt: skip
            self._write(df, self.data / _concept_file_name(concept))
            event = {
                "trial_id": row["id"],
                "concept": concept,
                "from_status": row["status"],
                "to_status": status,
                "actor": actor,
                "at": now,
                "reason": reason,
            }
            self._append_history(pl.DataFrame([event], schema=HISTORY_SCHEMA))
        return event
