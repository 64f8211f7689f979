"""The one Dagster entry point: `dagster dev -m qpipe_dagster.definitions` or workspace.yaml."""

import importlib
import inspect
import warnings
from collections.abc import Sequence

import numpy as np
from dagster import (
    AssetsDefinition,
    AssetSpec,
    BetaWarning,
    CodeReferencesMetadataValue,
    Definitions,
    LocalFileCodeReference,
    OpDefinition,
    PreviewWarning,
    load_assets_from_modules,
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
from qpipe_dagster.embed.rotation import active_model
from qpipe_dagster.with_parent import die_with_run_worker

# A step process of a run (the multiprocess executor's child of the run worker) dies with the
# run worker: killed with kill -9 or by the OOM killer, the worker used to leave it running as an
# orphan holding its memory (and GPU). Elsewhere (code server, run worker) this does nothing.
die_with_run_worker()

# Code references are beta in Dagster 1.13; the warnings would fill every log with noise.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)


def with_code_references(assets: Sequence[object]) -> list:
    """Each asset's "Source code" link points at its own function.

    Dagster's `with_source_code_references` asks `inspect.getsourcefile`, which does not follow
    `functools.wraps`: assets wrapped by `defs.retries.transient_only` were linked to retries.py.
    """
    linked = []
    for asset in assets:
        if not isinstance(asset, AssetsDefinition):
            linked.append(asset)
            continue
        node = asset.node_def
        fn = (
            getattr(node.compute_fn, "decorated_fn", None)
            if isinstance(node, OpDefinition)
            else None
        )
        if fn is None:
            linked.append(asset)
            continue
        fn = inspect.unwrap(fn)
        ref = LocalFileCodeReference(
            file_path=inspect.getsourcefile(fn) or "", line_number=inspect.getsourcelines(fn)[1]
        )
        value = CodeReferencesMetadataValue(code_references=[ref])

        def link(spec: AssetSpec, value: CodeReferencesMetadataValue = value) -> AssetSpec:
            return spec.merge_attributes(metadata={"dagster/code_references": value})

        linked.append(asset.map_asset_specs(link))
    return linked


def build_definitions() -> Definitions:
    """Assemble assets, jobs and resources; production switches come from the environment."""
    return Definitions(
        assets=with_code_references(
            [*load_assets_from_modules([knowledge, validation]), *OPERATIONS_ASSETS]
        ),
        jobs=[concept_pipeline_job, *OPERATIONS_JOBS, inbox_housekeeping_job],
        schedules=[*OPERATIONS_SCHEDULES, inbox_housekeeping_schedule],
        sensors=[qstash_inbox_sensor, run_failure_webhook],
        resources=default_resources(),
    )


defs = build_definitions()


# Imported inside the steps (so the code server and the CLI start fast), but every concept run
# needs them.
RUN_MODULES = (
    "qpipe_dagster.backtest.charts",
    "qpipe_dagster.backtest.engine",
    "qpipe_dagster.backtest.validation",
    "qpipe_dagster.market.prices",
    "qpipe_dagster.trials.pipeline",
    "qpipe_dagster.trials.report",
    "qpipe_dagster.trials.recommend",
    "polars",
    "lancedb",
)


def warm_up() -> None:
    """What a warm worker (`qpipe_dagster.launcher.warm`) loads once for every run it forks:
    the modules the steps import and the embedding model with its tokenizer."""
    for module in RUN_MODULES:
        importlib.import_module(module)
    from qpipe_dagster.backtest.kernels import running_sum

    running_sum(np.ones(2))  # numba's compiler context, set up once (a serial kernel: no threads)
    default_resources()["embedder"].encoder().model  # noqa: B018


def warm_key() -> str:
    """The state these definitions bound when they loaded, besides code and environment: the
    active embedding model (`qpipe reembed` switches it). A warm worker forks runs only while it
    is unchanged; after a switch, the next run gets a fresh worker with the new model."""
    model = active_model()
    return f"{model.name}@{model.truncate_dim or 'full'}"
