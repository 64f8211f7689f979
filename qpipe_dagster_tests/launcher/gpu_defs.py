"""Tiny code location for launcher tests: GPU-tagged assets (op tag / asset tag only), a CPU one."""

from dagster import Definitions, asset, define_asset_job, job, op

GPU = {"qpipe/compute": "gpu"}


@asset(tags=GPU, op_tags=GPU)
def gpu_asset() -> int:
    return 1


@asset(tags=GPU)  # asset tag only: it never reaches the step or run tags
def asset_tag_only() -> int:
    return 2


@asset
def cpu_asset() -> int:
    return 3


@op(tags=GPU)
def gpu_op() -> None:
    return None


@job
def gpu_op_job() -> None:
    gpu_op()


defs = Definitions(
    assets=[gpu_asset, asset_tag_only, cpu_asset],
    jobs=[
        define_asset_job("all_assets", selection="*"),
        define_asset_job("cpu_only", selection=["cpu_asset"]),
        define_asset_job("asset_tag_job", selection=["asset_tag_only"]),
        gpu_op_job,
    ],
)
