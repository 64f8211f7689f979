"""Jobs: the whole concept pipeline, run per concept partition (by the UI, sensors, schedules)."""

from collections.abc import Mapping

from dagster import AssetSelection, define_asset_job, in_process_executor

from qpipe_dagster.defs.partitions import concepts_partitions
from qpipe_dagster.defs.retries import TRANSIENT_RETRY_POLICY
from qpipe_dagster.settings import env_int

DEFAULT_MAX_RUNTIME_S = 7200
MAX_RUNTIME_TAG = "dagster/max_runtime"


def max_runtime_s(env: Mapping[str, str] | None = None) -> int:
    """QPIPE_MAX_RUNTIME_S (60 s to 7 days), 2 h when unset: a hung run is then canceled by the
    daemon's run monitoring (on in both instance configs) and frees its slot."""
    value = env_int("QPIPE_MAX_RUNTIME_S", 60, 7 * 86_400, env)
    return DEFAULT_MAX_RUNTIME_S if value is None else value


PIPELINE_ASSETS = (
    "crawled_pages",
    "parsed_pages",
    "page_embeddings",
    "weaviate_objects",
    "market_prices",
    "backtest_results",
    "strategy_recommendations",
)

concept_pipeline_job = define_asset_job(
    "concept_pipeline",
    selection=AssetSelection.assets(*PIPELINE_ASSETS),
    partitions_def=concepts_partitions,
    description="Crawl, parse, embed, store and backtest one concept.",
    tags={MAX_RUNTIME_TAG: str(max_runtime_s())},
    op_retry_policy=TRANSIENT_RETRY_POLICY,  # transient errors only: defs.retries
    # One process per run: imports, the embedding model and the compiled kernels are loaded once
    # per run, not once per step (a step process each cost more than most steps' own work).
    # Runs still overlap; the crawl keeps its own Pipes child, and the `gpu` pool still holds
    # backtest steps one at a time.
    executor_def=in_process_executor,
)
