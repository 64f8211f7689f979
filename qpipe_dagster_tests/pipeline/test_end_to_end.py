"""The whole asset graph for one concept: real Scrapy, real model, real LanceDB, real instance."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from qpipe_dagster.cli import main as qpipe
from qpipe_dagster.definitions import defs
from qpipe_dagster.demo import register_demo
from qpipe_dagster.storage.arrow_files import read_table
from qpipe_dagster.store import open_store

pytestmark = pytest.mark.slow


def _materialize(instance: DagsterInstance, partition: str):
    job = defs.resolve_job_def("concept_pipeline")
    result = job.execute_in_process(partition_key=partition, instance=instance)
    assert result.success
    return result


def _metadata(result, asset: str) -> dict:
    [mat] = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in mat.metadata.items()}


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_demo_concept_end_to_end(dagster_home: Path, demo_site, capsys) -> None:
    base_url, site_dir = demo_site
    register_demo(base_url)
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("concepts", ["demo"])
        first = _materialize(instance, "demo")

        crawl = _metadata(first, "crawled_pages")
        assert crawl["pages_ok"] == 12  # every demo page, found by following links
        parsed = read_table(dagster_home / "qpipe" / "assets" / "parsed_pages" / "demo")
        assert parsed.num_rows == 12
        texts = " ".join(parsed.column("text").to_pylist())
        assert "block subsidy" in texts
        assert "We use cookies" not in texts and "Nothing here is investment advice" not in texts
        emb = _metadata(first, "page_embeddings")
        assert emb["dim"] == 384 and emb["embedded"] == emb["chunks"] >= 12 and emb["reused"] == 0
        store = _metadata(first, "weaviate_objects")
        assert store["inserted"] == emb["chunks"] and store["objects_for_concept"] == emb["chunks"]
        bt = _metadata(first, "backtest_results")
        assert bt["parameter_sets"] > 1000 and bt["backend"] in ("cpu", "gpu")
        assert "data:image/png;base64," in bt["equity_curve"]
        assert bt["trials_stored"] == 20  # the best sets, searchable beside the page chunks
        assert all(_checks(first).values()), _checks(first)
        # Searchable first: the knowledge chain runs before the backtest, which does not need it.
        started = [e.step_key for e in first.all_events if e.event_type_value == "STEP_START"]
        assert started.index("weaviate_objects") < started.index("backtest_results"), started

        # Change one page and drop another: only that page is re-embedded, the dropped page's
        # chunks leave the store, and the object count stays exact.
        page = site_dir / "rsi-threshold.html"
        page.write_text(page.read_text().replace("Readings under 30", "Readings under twenty-five"))
        changed_chunks = sum(
            1
            for row in parsed.to_pylist()
            if row["url"].endswith("/rsi-threshold.html")
            for _ in row["chunks"]
        )
        (site_dir / "on-chain-metrics.html").unlink()
        second = _materialize(instance, "demo")
        emb2 = _metadata(second, "page_embeddings")
        assert emb2["embedded"] == changed_chunks
        assert emb2["reused"] == emb2["chunks"] - changed_chunks
        store2 = _metadata(second, "weaviate_objects")
        assert store2["updated"] + store2["inserted"] == changed_chunks
        assert store2["deleted"] > 0
        assert store2["objects_for_concept"] == emb2["chunks"]

        # Lineage: every asset has a materialization for the partition.
        for asset in ("crawled_pages", "parsed_pages", "page_embeddings", "weaviate_objects"):
            assert instance.get_latest_materialization_event(AssetKey(asset)) is not None

    # The objects are searchable from the CLI.
    assert (
        qpipe(["search", "when does the block reward halve", "--concept", "demo", "-k", "3"]) == 0
    )
    out = capsys.readouterr().out
    assert "halving-explained" in out or "supply-schedule" in out

    # Model rotation: the same model truncated to 256 dims is another configuration with its own
    # collection; search switches only after the re-embed, and the old collection is kept.
    old = open_store(model="all-MiniLM-L6-v2", dim=384)
    new = open_store(model="all-MiniLM-L6-v2@256", dim=256)
    try:
        assert new.count() == 0
        assert qpipe(["reembed", "--model", "all-MiniLM-L6-v2", "--truncate-dim", "256"]) == 0
        assert new.count("demo") == old.count("demo") == store2["objects_for_concept"]
    finally:
        old.close()
        new.close()
    assert qpipe(["models"]) == 0
    assert "all-MiniLM-L6-v2@256" in capsys.readouterr().out
    assert qpipe(["search", "when does the block reward halve", "--json", "-k", "1"]) == 0
    assert "halving" in capsys.readouterr().out.lower()


def test_unregistered_concept_fails_with_clear_error(dagster_home: Path) -> None:
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("concepts", ["nobody-knows"])
        result = defs.resolve_job_def("concept_pipeline").execute_in_process(
            partition_key="nobody-knows",
            instance=instance,
            asset_selection=[AssetKey("crawled_pages")],
            raise_on_error=False,
        )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert "not registered" in message and "qpipe concepts add nobody-knows" in message
