"""Jobs: the whole concept pipeline, run per concept partition (by the UI, sensors, schedules)."""

from dagster import AssetSelection, define_asset_job

from qpipe_dagster.defs.partitions import concepts_partitions

PIPELINE_ASSETS = (
    "crawled_pages",
    "parsed_pages",
    "page_embeddings",
    "weaviate_objects",
    "market_prices",
    "backtest_results",
)

concept_pipeline_job = define_asset_job(
    "concept_pipeline",
    selection=AssetSelection.assets(*PIPELINE_ASSETS),
    partitions_def=concepts_partitions,
    description="Crawl, parse, embed, store and backtest one concept.",
)
