"""Code location for the warm-worker tests: each op writes what it sees of its process to
$QPIPE_TEST_TIMES_DIR/<run_id>.json (its pid, its parent's, which process ran `warm_up`)."""

import json
import os
import signal
import time
from pathlib import Path

from dagster import Definitions, OpExecutionContext, in_process_executor, job, op

WARMED_IN: int | None = None  # set by warm_up in the warm worker; a forked run inherits it


def warm_up() -> None:
    global WARMED_IN
    WARMED_IN = os.getpid()


def warm_key() -> str:
    """Stands for qpipe's active model: a file the test rewrites."""
    key = Path(os.environ["QPIPE_TEST_TIMES_DIR"]) / "key.txt"
    return key.read_text() if key.exists() else "first"


def _record(context: OpExecutionContext) -> None:
    out = Path(os.environ["QPIPE_TEST_TIMES_DIR"]) / f"{context.run_id}.json"
    out.write_text(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "warmed": WARMED_IN}))


@op
def where(context: OpExecutionContext) -> None:
    _record(context)


@op
def hold(context: OpExecutionContext) -> None:
    _record(context)
    time.sleep(120)


@op
def crash(context: OpExecutionContext) -> None:
    _record(context)
    os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would


@job(executor_def=in_process_executor)
def where_job() -> None:
    where()


@job(executor_def=in_process_executor)
def hold_job() -> None:
    hold()


@job(executor_def=in_process_executor)
def crash_job() -> None:
    crash()


defs = Definitions(jobs=[where_job, hold_job, crash_job])
