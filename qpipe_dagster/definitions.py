"""The one Dagster entry point: `dagster dev -m qpipe_dagster.definitions` or workspace.yaml."""

import warnings

from dagster import (
    BetaWarning,
    Definitions,
    PreviewWarning,
    load_assets_from_modules,
    with_source_code_references,
)

from qpipe_dagster.defs import knowledge, validation
from qpipe_dagster.defs.alerts import run_failure_webhook
from qpipe_dagster.defs.housekeeping import inbox_housekeeping_job, inbox_housekeeping_schedule
from qpipe_dagster.defs.jobs import concept_pipeline_job
from qpipe_dagster.defs.operations import (
    OPERATIONS_ASSETS,
    OPERATIONS_JOBS,
    OPERATIONS_SCHEDULES,
)
from qpipe_dagster.defs.resources import default_resources
from qpipe_dagster.defs.triggers import qstash_inbox_sensor
from qpipe_dagster.with_parent import die_with_run_worker

# A step process of a run (the multiprocess executor's child of the run worker) dies with the
# run worker: killed with kill -9 or by the OOM killer, the worker used to leave it running as an
# orphan holding its memory (and GPU). Elsewhere (code server, run worker) this does nothing.
die_with_run_worker()

# Code references are beta in Dagster 1.13; the warnings would fill every log with noise.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)


def build_definitions() -> Definitions:
    """Assemble assets, jobs and resources; production switches come from the environment."""
    return Definitions(
        assets=with_source_code_references(
            [*load_assets_from_modules([knowledge, validation]), *OPERATIONS_ASSETS]
        ),
        jobs=[concept_pipeline_job, *OPERATIONS_JOBS, inbox_housekeeping_job],
        schedules=[*OPERATIONS_SCHEDULES, inbox_housekeeping_schedule],
        sensors=[qstash_inbox_sensor, run_failure_webhook],
        resources=default_resources(),
    )


defs = build_definitions()
