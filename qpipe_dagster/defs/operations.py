"""Operations in Dagster: recrawl stale concepts, nightly backups, a daily report.

The lead wires OPERATIONS_ASSETS, OPERATIONS_JOBS and OPERATIONS_SCHEDULES into Definitions.
Crons and windows come from the environment when the code location loads (QPIPE_RECRAWL_CRON,
QPIPE_RECRAWL_MAX_AGE_HOURS, QPIPE_RECRAWL_MAX_PER_TICK, QPIPE_BACKUP_CRON,
QPIPE_BACKUP_RETENTION_DAYS, QPIPE_REPORT_CRON); invalid values fail the load naming the variable.
"""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    Config,
    DagsterRunStatus,
    DefaultScheduleStatus,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    asset,
    define_asset_job,
    job,
    op,
    schedule,
)
from pydantic import Field

from qpipe_dagster.concepts import default_registry
from qpipe_dagster.defs.partitions import CONCEPTS_PARTITIONS
from qpipe_dagster.defs.triggers import max_concepts_per_day
from qpipe_dagster.monitoring.instance import new_concepts_today
from qpipe_dagster.ops.backup import Sources, run_backup
from qpipe_dagster.ops.manifest import BackupError
from qpipe_dagster.ops.report import (
    BacktestBest,
    RunSummary,
    best_from_metadata,
    build_report,
    inbox_stats,
    report_markdown,
)
from qpipe_dagster.ops.targets import target_from_env
from qpipe_dagster.settings import (
    SettingError,
    cap,
    env_cron,
    invalid,
    schedule_hours,
    schedule_whole,
)
from webhook_sensor.settings import default_inbox_target

TAG_TRIGGER = "qpipe/trigger"
TAG_CONCEPT = "qpipe/concept"
DEFAULT_RECRAWL_CRON = "*/15 * * * *"
DEFAULT_RECRAWL_MAX_AGE_HOURS = 24.0
DEFAULT_RECRAWL_MAX_PER_TICK = 10
DEFAULT_BACKUP_CRON = "0 3 * * *"
DEFAULT_REPORT_CRON = "30 6 * * *"
_ACTIVE = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def schedule_cron(name: str, default: str, env: Mapping[str, str] | None) -> str:
    """settings.env_cron, then Dagster's own check (its error would name no variable)."""
    from dagster._utils.schedules import is_valid_cron_string

    value = env_cron(name, default, env)
    if not is_valid_cron_string(value):
        raise invalid(name, value, "Dagster does not accept it as a schedule")
    return value


# -- recrawl -----------------------------------------------------------------------------


def last_crawled(instance, slug: str) -> "datetime | None":  # DagsterInstance
    """When `crawled_pages` was last materialized for a concept (None: never)."""
    result = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("crawled_pages"), asset_partitions=[slug]), limit=1
    )
    if not result.records:
        return None
    return datetime.fromtimestamp(result.records[0].timestamp, UTC)


def build_recrawl_schedule(env: Mapping[str, str] | None = None) -> ScheduleDefinition:
    """Every tick: concepts whose pages are older than the window get a concept_pipeline run.

    Oldest first, at most max_per_tick per tick, never while the concept already has a run queued
    or in progress. Re-runs are cheap downstream: unchanged chunks reuse their vectors and the
    store skips unchanged objects. run_key = concept + freshness window, so a failed recrawl is
    retried once per window, not every 15 minutes.
    """
    cron = schedule_cron("QPIPE_RECRAWL_CRON", DEFAULT_RECRAWL_CRON, env)
    max_age = timedelta(
        hours=schedule_hours("QPIPE_RECRAWL_MAX_AGE_HOURS", DEFAULT_RECRAWL_MAX_AGE_HOURS, 0.01, env)
    )
    per_tick = schedule_whole("QPIPE_RECRAWL_MAX_PER_TICK", DEFAULT_RECRAWL_MAX_PER_TICK, 1, env)

    @schedule(
        name="recrawl_schedule",
        cron_schedule=cron,
        job_name="concept_pipeline",
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Re-runs concepts whose pages are older than {max_age} (cron {cron}).",
    )
    def recrawl_schedule(context: ScheduleEvaluationContext):
        now = context.scheduled_execution_time or datetime.now(UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        instance = context.instance
        registry = default_registry()
        stale: list[tuple[float, str]] = []
        no_seeds: list[str] = []
        for slug in instance.get_dynamic_partitions(CONCEPTS_PARTITIONS):
            concept = registry.get(slug)
            if concept is None or not concept.seed_urls:
                no_seeds.append(slug)
                continue
            last = last_crawled(instance, slug)
            age = (now - last).total_seconds() if last else float("inf")
            if age > max_age.total_seconds():
                stale.append((age, slug))
        stale.sort(key=lambda item: (-item[0], item[1]))
        window = int(now.timestamp() // max_age.total_seconds())
        requests = []
        busy = []
        for _age, slug in stale:
            if len(requests) >= per_tick:
                break
            active = instance.get_runs_count(
                RunsFilter(
                    job_name="concept_pipeline",
                    tags={"dagster/partition": slug},
                    statuses=_ACTIVE,
                )
            )
            if active:
                busy.append(slug)
                continue
            requests.append(
                RunRequest(
                    run_key=f"recrawl:{slug}:{window}",
                    partition_key=slug,
                    tags={TAG_TRIGGER: "recrawl", TAG_CONCEPT: slug},
                )
            )
        if not requests:
            why = f"no concept older than {max_age}"
            if busy:
                why += f"; already running: {', '.join(busy)}"
            if no_seeds:
                why += f"; skipped without seed URLs: {', '.join(no_seeds[:5])}"
            return SkipReason(why)
        context.log.info(
            f"recrawling {len(requests)} of {len(stale)} stale concept(s): "
            + ", ".join(r.partition_key for r in requests)
        )
        return requests

    return recrawl_schedule


# -- nightly backup ----------------------------------------------------------------------


class BackupConfig(Config):
    target_url: str | None = Field(
        default=None,
        description="path, file://, s3://bucket/prefix or r2://bucket/prefix; default BACKUP_URL,"
        " R2_*, or $DAGSTER_HOME/qpipe/backups",
    )
    retention_days: int = Field(default=7, ge=1, description="delete backups older than this")


@op(description="Snapshot the vector store, inbox and concept registry to the backup target.")
def backup_stores(context: OpExecutionContext, config: BackupConfig) -> None:
    try:
        result = run_backup(
            Sources.from_env(),
            target_from_env(config.target_url),
            retention_days=config.retention_days,
            log=context.log.info,
        )
    except BackupError as exc:
        raise Failure(description=str(exc)) from exc
    context.log.info(
        f"backup {result.backup_id} written to {result.target}; "
        f"retention removed {result.deleted_by_retention or 'nothing'}; interrupted backups"
        f" removed: {result.swept_incomplete or 'none'}"
    )
    context.log_event(
        AssetObservation(
            asset_key=AssetKey(["qpipe", "backups"]),
            metadata={
                "backup_id": result.backup_id,
                "target": result.target,
                "components": MetadataValue.json(
                    {c.name: {"rows": c.rows, "bytes": c.bytes} for c in result.manifest.components}
                ),
                "deleted_by_retention": MetadataValue.json(result.deleted_by_retention),
                "swept_incomplete": MetadataValue.json(result.swept_incomplete),
            },
        )
    )


@job(name="nightly_backup", description="Back up every store (same as `qpipe backup`).")
def nightly_backup_job() -> None:
    backup_stores()


def build_nightly_backup_schedule(env: Mapping[str, str] | None = None) -> ScheduleDefinition:
    cron = schedule_cron("QPIPE_BACKUP_CRON", DEFAULT_BACKUP_CRON, env)
    retention = schedule_whole("QPIPE_BACKUP_RETENTION_DAYS", 7, 1, env)

    @schedule(
        name="nightly_backup_schedule",
        cron_schedule=cron,
        job=nightly_backup_job,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Backs up the stores (cron {cron}, keeps {retention} days).",
    )
    def nightly_backup_schedule(context: ScheduleEvaluationContext) -> RunRequest:
        when = context.scheduled_execution_time or datetime.now(UTC)
        return RunRequest(
            run_key=f"backup:{when:%Y-%m-%d}",
            run_config={"ops": {"backup_stores": {"config": {"retention_days": retention}}}},
            tags={TAG_TRIGGER: "schedule"},
        )

    return nightly_backup_schedule


# -- daily report ------------------------------------------------------------------------


def _optional_int(name: str, minimum: int) -> int | None:
    """An optional daily cap, read by the start-up check's rule (settings.cap)."""
    try:
        return cap(name, minimum)
    except SettingError as exc:
        raise Failure(description=str(exc)) from None


@asset(
    group_name="operations",
    kinds={"python"},
    owners=["team:ops"],
    description="Last 24 h: concepts processed, messages received/failed, cost-cap usage "
    "(MAX_CONCEPTS_PER_DAY, QSTASH_DAILY_LIMIT) and the top backtest results.",
)
def daily_ops_report(context) -> MaterializeResult:  # AssetExecutionContext
    instance = context.instance
    now = datetime.now(UTC)
    since = now - timedelta(days=1)
    records = instance.get_run_records(
        RunsFilter(job_name="concept_pipeline", created_after=since), limit=5000
    )
    runs = [
        RunSummary(
            r.dagster_run.run_id,
            r.dagster_run.tags.get("dagster/partition"),
            r.dagster_run.status.value,
            r.dagster_run.tags.get(TAG_TRIGGER),
        )
        for r in records
    ]
    best: dict[str, BacktestBest] = {}
    events = instance.fetch_materializations(AssetKey("backtest_results"), limit=1000)
    for rec in events.records:  # newest first: keep the latest per concept
        mat = rec.asset_materialization
        if mat is None or mat.partition in best:
            continue
        found = best_from_metadata(
            mat.partition or "-", {k: v.value for k, v in mat.metadata.items()}
        )
        if found is not None:
            best[found.concept] = found
    report = build_report(
        day=now.date().isoformat(),
        runs=runs,
        inbox=inbox_stats(default_inbox_target(), since.timestamp()),
        backtests=list(best.values()),
        max_concepts_per_day=max_concepts_per_day(),
        qstash_daily_limit=_optional_int("QSTASH_DAILY_LIMIT", 1),
        new_concepts_today=new_concepts_today(instance, now.date().isoformat()),
    )
    for name, usage in report["caps"].items():
        if usage["over"]:
            context.log.warning(f"{name} reached: {usage['used']} / {usage['limit']}")
    return MaterializeResult(
        metadata={
            "report": MetadataValue.md(report_markdown(report)),
            "json": MetadataValue.json(report),
            "runs_failed": report["runs"]["failed"],
            "messages_received": report["messages"]["received"],
        }
    )


daily_report_job = define_asset_job(
    "daily_report", selection=[daily_ops_report], description="Materialize daily_ops_report."
)


def build_daily_report_schedule(env: Mapping[str, str] | None = None) -> ScheduleDefinition:
    return ScheduleDefinition(
        name="daily_report_schedule",
        cron_schedule=schedule_cron("QPIPE_REPORT_CRON", DEFAULT_REPORT_CRON, env),
        job=daily_report_job,
        default_status=DefaultScheduleStatus.RUNNING,
    )


recrawl_schedule = build_recrawl_schedule()
nightly_backup_schedule = build_nightly_backup_schedule()
daily_report_schedule = build_daily_report_schedule()

OPERATIONS_ASSETS = [daily_ops_report]
OPERATIONS_JOBS = [nightly_backup_job, daily_report_job]
OPERATIONS_SCHEDULES = [recrawl_schedule, nightly_backup_schedule, daily_report_schedule]
