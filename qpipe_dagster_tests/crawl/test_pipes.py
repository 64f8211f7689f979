"""The Dagster Pipes path: a real asset runs the crawler child via PipesSubprocessClient.

No `from __future__ import annotations`: Dagster inspects the real `context` annotation.
"""

from pathlib import Path

import pytest
from dagster import (
    AssetExecutionContext,
    DagsterInstance,
    PipesSubprocessClient,
    asset,
    materialize,
)

from qpipe_dagster.crawl.runner import pipes_command, pipes_extras, read_crawled_pages
from qpipe_dagster.crawl.settings import CrawlSettings
from qpipe_dagster_tests.crawl.conftest import Site

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_pipes_materialization_reports_summary(
    wide_site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    out = tmp_path / "pages.arrow"
    settings = CrawlSettings(max_depth=1, max_pages=4, timeout_s=2.0, autothrottle=False)

    @asset
    def crawled_pages(
        context: AssetExecutionContext, pipes_subprocess_client: PipesSubprocessClient
    ):
        return pipes_subprocess_client.run(
            command=pipes_command(),
            context=context,
            extras=pipes_extras([wide_site.url("/")], settings, out),
            env={"PYTHONPATH": str(REPO_ROOT)},
        ).get_materialize_result()

    with DagsterInstance.get() as instance:
        result = materialize(
            [crawled_pages],
            resources={"pipes_subprocess_client": PipesSubprocessClient()},
            instance=instance,
        )
        assert result.success
        (mat,) = result.asset_materializations_for_node("crawled_pages")
        meta = {k: v.value for k, v in mat.metadata.items()}
        assert meta["pages_ok"] == 4 and meta["pages_failed"] == 0 and meta["pages_skipped"] == 0
        assert meta["rows"] == 4
        assert meta["bytes"] > 0 and meta["duration_s"] > 0
        logs = [
            e.message or ""
            for e in instance.all_logs(result.run_id)
            if e.message and "crawl finished" in e.message
        ]
        assert logs, "pipes.log messages reach the Dagster event log"
    table = read_crawled_pages(out)
    assert table.num_rows == 4
