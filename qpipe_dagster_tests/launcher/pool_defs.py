"""Code location for the GPU-pool test: a CPU step, then a step in the `gpu` pool like
backtest_results (pool, op tag and asset tag). Each step appends its start/end wall-clock
times to $QPIPE_TEST_TIMES_DIR/<run_id>.<step>, so the test sees what overlapped."""

import os
import time
from pathlib import Path

from dagster import AssetExecutionContext, Definitions, asset, define_asset_job

GPU = {"qpipe/compute": "gpu"}


def _hold(context: AssetExecutionContext, name: str, seconds: float) -> None:
    start = time.time()
    time.sleep(seconds)
    out = Path(os.environ["QPIPE_TEST_TIMES_DIR"]) / f"{context.run_id}.{name}"
    out.write_text(f"{start} {time.time()}")


@asset
def prep(context: AssetExecutionContext) -> int:
    _hold(context, "prep", 6.0)
    return 1


@asset(pool="gpu", tags=GPU, op_tags=GPU)
def sweep(context: AssetExecutionContext, prep: int) -> int:
    _hold(context, "sweep", 8.0)
    return prep


defs = Definitions(assets=[prep, sweep], jobs=[define_asset_job("pipeline", selection="*")])
