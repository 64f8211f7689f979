"""The user's path through the Dagster UI of `make run`, in a real Chromium.

One flow, in the order a user takes it, because each step needs the one before: see the asset
graph, materialize the `demo` partition from the UI, read the backtest's pictures and table and
the vector store's counts, then submit a concept with `qpipe submit` and watch the sensor start
its run. Every step leaves a screenshot in test-artifacts/e2e/ (or $QPIPE_E2E_ARTIFACTS).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)"
)
from playwright.sync_api import Page, expect

from qpipe_dagster_tests.e2e import ui
from qpipe_dagster_tests.e2e.stack import REPO, DevStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

ASSETS = {
    # asset: (group, a kind it must show, source file of its code reference)
    "crawled_pages": ("knowledge", "scrapy", "knowledge.py"),
    "parsed_pages": ("knowledge", "polars", "knowledge.py"),
    "page_embeddings": ("knowledge", "pytorch", "knowledge.py"),
    "weaviate_objects": ("knowledge", "weaviate", "knowledge.py"),
    "market_prices": ("validation", "polars", "validation.py"),
    "backtest_results": ("validation", "vectorbt", "validation.py"),
    "strategy_recommendations": ("validation", "polars", "trial_assets.py"),
}
EDGES = {
    ("crawled_pages", "parsed_pages"),
    ("parsed_pages", "page_embeddings"),
    ("page_embeddings", "weaviate_objects"),
    ("market_prices", "backtest_results"),
    ("backtest_results", "strategy_recommendations"),
}
RUN_TIMEOUT_S = 240  # a cold demo run is ~50 s on 2 busy cores: model load, crawl, Numba JIT
SENSOR_TIMEOUT_S = 120  # sensor interval 2 s + daemon tick + queued-run launch


def _int(text: str) -> int:
    return int(text.replace(",", "").strip())


def test_ui_flow(page: Page, stack: DevStack, artifacts: Path) -> None:
    shots = ui.Shots(page, artifacts)
    names = list(ASSETS)

    with shots.step("asset-graph"):
        ui.open_lineage(page, stack.ui_url)
        ui.expand_all_groups(page)
        graph = ui.read_graph(page, names)
        assert set(graph["nodes"]) == set(names), f"asset nodes drawn: {sorted(graph['nodes'])}"
        # Edges between assets outside the pipeline (other groups) resolve to (None, None).
        drawn = {tuple(e) for e in graph["edges"] if e != [None, None]}
        assert drawn == EDGES, f"edges drawn {sorted(drawn, key=str)} != expected {sorted(EDGES)}"
        for group in {g for g, _, _ in ASSETS.values()}:
            expect(page.get_by_text(group, exact=True).first).to_be_visible()

    with shots.step("run-launched"):
        # From the concept_pipeline job, so Materialize covers exactly the pipeline's assets.
        ui.open_job(page, stack.ui_url, "concept_pipeline")
        run_id = ui.launch_partition_run(
            page, "demo", len(ASSETS), before_launch=lambda: shots.take("materialize-dialog-demo")
        )

    # While the run works: what each asset's page says about its definition.
    for asset, (group, kind, source) in ASSETS.items():
        with shots.step(f"definition-{asset}"):
            ui.open_asset(page, stack.ui_url, asset)
            for label in ("Description", "Group", "Owners", "Kinds", "Source code"):
                expect(page.get_by_text(label, exact=True).first).to_be_visible()
            expect(ui.exact_text(page, group)).to_be_visible()
            expect(ui.exact_text(page, kind)).to_be_visible()
            expect(ui.exact_text(page, source)).to_be_visible()
            if asset == "parsed_pages":  # the column schema, with what each column means
                expect(ui.exact_text(page, "final_url")).to_be_visible()
                expect(page.get_by_text("URL after redirects").first).to_be_visible()

    with shots.step("run-success"):
        status = ui.wait_for_run_status(page, stack.ui_url, run_id, RUN_TIMEOUT_S)
        assert status == "Success", (
            f"run {run_id} ended {status!r}; errors from {stack.log_path}:\n"
            + "\n".join(ln for ln in stack.log_tail(20_000).splitlines() if "Error" in ln)[-3000:]
        )
        expect(page.get_by_text("partition: demo").first).to_be_visible()

    with shots.step("backtest-results"):
        ui.open_asset(page, stack.ui_url, "backtest_results")
        expect(page.get_by_text("demo", exact=True).first).to_be_visible()
        for key in ("equity_curve", "top_results", "best_sharpe", "parameter_sets"):
            expect(ui.metadata_row(page, key)).to_have_count(1)
        assert _int(ui.metadata_value(page, "parameter_sets")) > 0

    with shots.step("equity-curve"):
        dialog = ui.open_markdown(page, "equity_curve")
        img = dialog.locator("img").first
        expect(img).to_be_visible()
        size = img.evaluate("e => [e.complete, e.naturalWidth, e.naturalHeight]")
        assert size[0] and size[1] > 200 and size[2] > 100, f"equity curve image is {size}"
    ui.close_dialog(page, dialog)

    with shots.step("top-results-table"):
        dialog = ui.open_markdown(page, "top_results")
        headers = [h.strip() for h in dialog.get_by_role("columnheader").all_inner_texts()]
        # the robust ranking's evidence (issue 17): in- and out-of-sample Sharpe, DSR, PBO
        assert {"is_sharpe", "oos_sharpe", "dsr", "pbo"} <= set(headers), headers
        rows = dialog.get_by_role("row").count() - 1  # minus the header row
        assert rows >= 1, "the results table has no rows"
    ui.close_dialog(page, dialog)

    with shots.step("page-embeddings"):
        ui.open_asset(page, stack.ui_url, "page_embeddings")
        chunks = _int(ui.metadata_value(page, "chunks"))
        assert chunks > 0

    with shots.step("weaviate-objects"):
        ui.open_asset(page, stack.ui_url, "weaviate_objects")
        counts = {
            k: _int(ui.metadata_value(page, k))
            for k in ("inserted", "updated", "unchanged", "deleted", "objects_for_concept")
        }
        # A first run inserts every chunk; the store then holds exactly page_embeddings' rows.
        assert counts["objects_for_concept"] == chunks, (counts, chunks)
        assert counts["inserted"] + counts["updated"] + counts["unchanged"] == chunks, counts
        assert counts["deleted"] == 0, counts

    with shots.step("weaviate-objects-check"):
        page.get_by_role("tab", name="Checks").click()
        check = page.get_by_text("store_matches_embeddings", exact=True).first
        expect(check).to_be_visible()
        expect(page.get_by_text("exactly one object per chunk").first).to_be_visible()
        expect(page.get_by_text("Passed", exact=True).first).to_be_visible()

    with shots.step("submit-sensor-run"):
        message_id = _submit(stack, "E2E sensor concept")
        row = _wait_for_run_row(page, stack.ui_url, message_id, SENSOR_TIMEOUT_S)
        expect(row.get_by_text(f"qpipe/message_id: {message_id}", exact=True)).to_be_visible()
        expect(row.get_by_text("partition: e2e-sensor-concept", exact=True)).to_be_visible()
        expect(row.get_by_text("concept_pipeline", exact=True)).to_be_visible()
        expect(row.get_by_text("qstash_inbox_sensor", exact=True)).to_be_visible()


def _submit(stack: DevStack, concept: str) -> str:
    """`qpipe submit` exactly as a user types it, with the stack's environment."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "qpipe"),
            "submit",
            concept,
            "--url",
            f"{stack.demo_url}index.html",
        ],
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"qpipe submit failed: {result.stderr or result.stdout}"
    reply = json.loads(result.stdout.strip().splitlines()[-1])
    assert reply.get("message_id"), reply
    return reply["message_id"]


def _wait_for_run_row(page: Page, ui_url: str, message_id: str, timeout_s: float):
    """Reload the Runs page until a run tagged with this message id is listed; return its row.

    The runs list is a grid of divs, so the row is the innermost element that holds both the
    tag and the sensor that launched the run.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        page.goto(f"{ui_url}/runs")
        tag = page.get_by_text(f"qpipe/message_id: {message_id}", exact=True)
        try:
            expect(tag.first).to_be_attached(timeout=5_000)
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no run tagged qpipe/message_id={message_id} on the Runs page after "
                    f"{timeout_s:.0f}s (sensor qstash_inbox_sensor should start one)"
                ) from None
            continue
        return (
            page.locator("div")
            .filter(has=tag)
            .filter(has=page.get_by_text("qstash_inbox_sensor", exact=True))
            .last
        )
