"""Operations in Dagster: recrawl stale concepts, nightly backups, a daily report.

The lead wires OPERATIONS_ASSETS, OPERATIONS_JOBS and OPERATIONS_SCHEDULES into Definitions.
Crons and windows come from the environment when the code location loads (QPIPE_RECRAWL_CRON,
QPIPE_RECRAWL_MAX_AGE_HOURS, QPIPE_RECRAWL_MAX_PER_TICK, QPIPE_BACKUP_CRON,
QPIPE_BACKUP_RETENTION_DAYS, QPIPE_REPORT_CRON); invalid values fail the load naming the variable.
"""

from collections.abc import Collection, Iterator, Mapping
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    Config,
    DagsterEventType,
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
from qpipe_dagster.ops.recrawl import plan_recrawl
from qpipe_dagster.ops.report import (
    RunSummary,
    build_report,
    cap_warnings,
    inbox_stats,
    latest_bests,
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
_STORAGE_IDS_PER_QUERY = 500  # bounded IN lists, for SQLite's variable limit
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


def last_crawled(instance, slugs: Collection[str]) -> dict[str, datetime]:  # DagsterInstance
    """When `crawled_pages` was last materialized, per concept of `slugs` (absent: never).

    A fixed number of queries whatever the number of concepts: the latest storage id per
    partition, then those events' timestamps in batches. One query per concept made a
    1,000-concept tick take 4.7 s (bench/scale.py, issue 18)."""
    key = AssetKey("crawled_pages")
    latest = instance.get_latest_storage_id_by_partition(
        key, DagsterEventType.ASSET_MATERIALIZATION
    )
    wanted = set(slugs)
    ids = [sid for partition, sid in latest.items() if partition in wanted]
    found: dict[str, datetime] = {}
    for start in range(0, len(ids), _STORAGE_IDS_PER_QUERY):
        batch = ids[start : start + _STORAGE_IDS_PER_QUERY]
        result = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, storage_ids=batch), limit=len(batch)
        )
        for record in result.records:
            if record.partition_key is not None:
                found[record.partition_key] = datetime.fromtimestamp(record.timestamp, UTC)
    return found


def is_running(instance, slug: str) -> bool:  # DagsterInstance
    """Whether a concept_pipeline run of the concept is queued or in progress."""
    active = RunsFilter(
        job_name="concept_pipeline", tags={"dagster/partition": slug}, statuses=_ACTIVE
    )
    return bool(instance.get_runs_count(active))


def build_recrawl_schedule(env: Mapping[str, str] | None = None) -> ScheduleDefinition:
    """Every tick: concepts whose pages are older than the window get a concept_pipeline run.

    Which ones and in what order is `ops.recrawl.plan_recrawl`. Re-runs are cheap downstream:
    unchanged chunks reuse their vectors and the store skips unchanged objects.
    """
    cron = schedule_cron("QPIPE_RECRAWL_CRON", DEFAULT_RECRAWL_CRON, env)
    max_age = timedelta(
        hours=schedule_hours(
            "QPIPE_RECRAWL_MAX_AGE_HOURS", DEFAULT_RECRAWL_MAX_AGE_HOURS, 0.01, env
        )
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
        instance = context.instance
        slugs = instance.get_dynamic_partitions(CONCEPTS_PARTITIONS)
        # the registry and the history are read once per tick, not once per concept
        seeded = {c.slug for c in default_registry().list() if c.seed_urls}
        crawled = last_crawled(instance, [s for s in slugs if s in seeded])
        plan = plan_recrawl(
            slugs,
            now=context.scheduled_execution_time or datetime.now(UTC),
            max_age=max_age,
            per_tick=per_tick,
            has_seeds=seeded.__contains__,
            last_crawled=crawled.get,
            is_running=lambda slug: is_running(instance, slug),
        )
        if not plan.runs:
            return SkipReason(plan.skip_reason())
        context.log.info(plan.summary())
        return [
            RunRequest(
                run_key=plan.run_key(slug),
                partition_key=slug,
                tags={TAG_TRIGGER: "recrawl", TAG_CONCEPT: slug},
            )
            for slug in plan.runs
        ]

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


def _run_summary(run) -> RunSummary:  # DagsterRun
    return RunSummary(
        run.run_id, run.tags.get("dagster/partition"), run.status.value, run.tags.get(TAG_TRIGGER)
    )


def _partition_metadata(records) -> Iterator[tuple[str | None, dict]]:  # EventLogRecords
    """(partition, plain metadata) of each materialization, in the order given."""
    for record in records:
        mat = record.asset_materialization
        if mat is not None:
            yield mat.partition, {k: v.value for k, v in mat.metadata.items()}


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
    events = instance.fetch_materializations(AssetKey("backtest_results"), limit=1000)
    report = build_report(
        day=now.date().isoformat(),
        runs=[_run_summary(r.dagster_run) for r in records],
        inbox=inbox_stats(default_inbox_target(), since.timestamp()),
        backtests=latest_bests(_partition_metadata(events.records)),
        max_concepts_per_day=max_concepts_per_day(),
        qstash_daily_limit=_optional_int("QSTASH_DAILY_LIMIT", 1),
        new_concepts_today=new_concepts_today(instance, now.date().isoformat()),
    )
    for warning in cap_warnings(report):
        context.log.warning(warning)
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
