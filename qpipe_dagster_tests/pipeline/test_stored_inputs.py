"""Knowledge assets on bad stored inputs, partition keys and run config: real instance, real runs.

Each case fails before any crawl, parse or embedding work, so the runs are quick.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from dagster import AssetKey, DagsterInstance

from qpipe_dagster.concepts import Concept, ConceptRegistry, default_registry
from qpipe_dagster.crawl.schema import CRAWLED_PAGES_SCHEMA
from qpipe_dagster.definitions import defs
from qpipe_dagster.parse.table import PARSED_PAGES_SCHEMA
from qpipe_dagster.storage.arrow_files import read_table, write_table


def _run(instance: DagsterInstance, asset: str, partition: str, config: dict | None = None):
    """Materialize one asset of the pipeline job; (result, failure text or None)."""
    instance.add_dynamic_partitions("concepts", [partition])
    result = defs.resolve_job_def("concept_pipeline").execute_in_process(
        partition_key=partition,
        instance=instance,
        asset_selection=[AssetKey(asset)],
        run_config={"ops": {asset: {"config": config}}} if config else None,
        raise_on_error=False,
    )
    failures = [e for e in result.all_events if e.is_step_failure]
    if not failures:
        return result, None
    data = failures[0].step_failure_data
    if data.user_failure_data is not None:
        return result, data.user_failure_data.description
    error, parts = data.error, []
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return result, " | ".join(parts)


def _assets(home: Path) -> Path:
    return home / "qpipe" / "assets"


def _crawled_row() -> dict:
    return {
        "url": "http://127.0.0.1/a.html",
        "final_url": "http://127.0.0.1/a.html",
        "status": 200,
        "fetched_at": datetime(2026, 1, 1, tzinfo=UTC),
        "content_type": "text/html",
        "encoding": "utf-8",
        "html": b"<html><body><p>Bitcoin halves its block subsidy.</p></body></html>",
        "content_hash": "x",
        "depth": 0,
        "error": None,
    }


def test_crawled_pages_of_another_format_name_the_folder(dagster_home: Path) -> None:
    """Old code: KeyError: 'encoding' from inside parsed_pages' page loop."""
    old = pa.Table.from_pylist([_crawled_row()], schema=CRAWLED_PAGES_SCHEMA).drop_columns(
        ["encoding"]
    )
    write_table(old, _assets(dagster_home) / "crawled_pages" / "old-format")
    with DagsterInstance.get() as instance:
        result, message = _run(instance, "parsed_pages", "old-format")
    assert not result.success
    assert "stored crawled_pages of concept 'old-format'" in message
    assert str(_assets(dagster_home) / "crawled_pages" / "old-format") in message
    assert "no column 'encoding'" in message
    assert "materialize crawled_pages for this concept again" in message


def test_parsed_pages_of_another_format_name_the_folder(dagster_home: Path) -> None:
    """Old code: KeyError: 'Field "chunks" does not exist in schema'."""
    write_table(pa.table({"url": ["x"]}), _assets(dagster_home) / "parsed_pages" / "no-chunks")
    with DagsterInstance.get() as instance:
        _, message = _run(instance, "page_embeddings", "no-chunks")
    assert "stored parsed_pages of concept 'no-chunks'" in message
    assert "no column 'chunks'" in message and "no column 'parser_version'" in message
    assert "materialize parsed_pages for this concept again" in message


def test_page_embeddings_without_vectors_are_named(dagster_home: Path) -> None:
    """Old code: KeyError: 'Field "vector" does not exist in schema' (or "model")."""
    table = pa.table({"id": ["a"], "model": ["all-MiniLM-L6-v2"]})
    write_table(table, _assets(dagster_home) / "page_embeddings" / "no-vectors")
    with DagsterInstance.get() as instance:
        _, message = _run(instance, "weaviate_objects", "no-vectors")
    assert "stored page_embeddings of concept 'no-vectors'" in message
    assert "no vector column" in message and "materialize page_embeddings" in message


def test_truncated_upstream_file_names_the_file(dagster_home: Path) -> None:
    folder = _assets(dagster_home) / "crawled_pages" / "cut-short"
    write_table(pa.Table.from_pylist([_crawled_row()], schema=CRAWLED_PAGES_SCHEMA), folder)
    part = folder / "part-00000.arrows"
    part.write_bytes(part.read_bytes()[:100])
    with DagsterInstance.get() as instance:
        _, message = _run(instance, "parsed_pages", "cut-short")
    assert str(part) in message
    assert "materialize crawled_pages for partition 'cut-short' again" in message


def test_partition_key_cannot_reach_another_assets_files(dagster_home: Path) -> None:
    """Dagster accepts any dynamic partition key. Old code: parsed_pages for the key
    '../crawled_pages/victim' read crawled_pages/victim and replaced it with a parsed table."""
    victim = _assets(dagster_home) / "crawled_pages" / "victim"
    crawled = pa.Table.from_pylist([_crawled_row()], schema=CRAWLED_PAGES_SCHEMA)
    write_table(crawled, victim)
    with DagsterInstance.get() as instance:
        result, message = _run(instance, "parsed_pages", "../crawled_pages/victim")
    assert not result.success
    # the IO manager refuses the key before the asset body (which checks it too) is reached
    assert "partition key '../crawled_pages/victim' of crawled_pages cannot be stored" in message
    assert read_table(victim).equals(crawled)


def test_damaged_previous_embeddings_are_re_embedded_and_old_parses_reported(
    dagster_home: Path,
) -> None:
    """The stored page_embeddings are only a cache of vectors. Old code: a damaged one failed
    the run with pyarrow's bare ArrowInvalid; parsed_pages of an older parser were embedded
    without a word."""
    parsed = pa.Table.from_pylist(
        [{"url": "http://x/a", "parser_version": "qpipe-parse-0.9", "chunks": []}],
        schema=PARSED_PAGES_SCHEMA,
    )
    write_table(parsed, _assets(dagster_home) / "parsed_pages" / "stale")
    previous = _assets(dagster_home) / "page_embeddings" / "stale"
    write_table(pa.table({"x": [1]}), previous)
    (previous / "part-00000.arrows").write_bytes(b"junk")
    with DagsterInstance.get() as instance:
        result, message = _run(instance, "page_embeddings", "stale")
        assert result.success, message
        [mat] = result.asset_materializations_for_node("page_embeddings")
        assert mat.metadata["stale_parser_versions"].value == ["qpipe-parse-0.9"]
        logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("previous page_embeddings not reused" in m and "part-00000" in m for m in logs)
    assert any("parsed by 'qpipe-parse-0.9'" in m and "materialize parsed_pages" in m for m in logs)


@pytest.mark.parametrize("url", ["ftp://x.org/", ""])
def test_bad_extra_seed_url_names_the_config_field(dagster_home: Path, url: str) -> None:
    """Old code: "seed URL 'ftp://x.org/' must start with ..." (as if the concept's own seed
    were bad), naming neither the asset config nor the field."""
    default_registry().upsert(Concept.create("Seeded", ["http://127.0.0.1:9/"]))
    with DagsterInstance.get() as instance:
        _, message = _run(
            instance, "crawled_pages", "seeded", {"extra_seed_urls": ["http://a.org/", url]}
        )
    assert message.startswith(f"crawled_pages config extra_seed_urls[1] = {url!r}: ")


def test_bad_chunking_config_names_the_config_fields(dagster_home: Path) -> None:
    """Old code: 'invalid chunking config: overlap_tokens (100) must be smaller than max_tokens
    (100)', names of the Chunker's arguments rather than of parsed_pages' config fields."""
    crawled = pa.Table.from_pylist([_crawled_row()], schema=CRAWLED_PAGES_SCHEMA)
    write_table(crawled, _assets(dagster_home) / "crawled_pages" / "chunky")
    config = {"chunk_max_tokens": 100, "chunk_overlap_tokens": 100}
    with DagsterInstance.get() as instance:
        _, message = _run(instance, "parsed_pages", "chunky", config)
    assert message.startswith("parsed_pages config chunk_max_tokens=100, chunk_overlap_tokens=100")
    assert "must be smaller than" in message


def test_unusable_concept_registry_fails_the_run_naming_the_file(dagster_home: Path) -> None:
    """Old code: sqlite3.DatabaseError: file is not a database, naming no file."""
    registry = dagster_home / "qpipe" / "concepts.sqlite"
    registry.parent.mkdir(parents=True, exist_ok=True)
    registry.write_bytes(b"not sqlite " * 1000)
    with DagsterInstance.get() as instance:
        result, message = _run(instance, "crawled_pages", "anything")
    assert not result.success
    assert message.startswith(f"concept registry {registry} is not a usable concepts database")


def test_production_crawl_refuses_loopback_seeds(
    dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QPIPE_CRAWL_PRIVATE_ADDRESSES=refuse reaches the crawler child through the real asset:
    a seed on loopback becomes a refused row (nothing listens there: nothing may connect), and
    a crawl that fetched nothing fails the run (the blocking crawl_not_empty) naming why."""
    ConceptRegistry(dagster_home / "qpipe" / "concepts.sqlite").upsert(
        Concept.create("inside job", ["http://127.0.0.1:9/admin", "http://[::1]:9/"])
    )
    monkeypatch.setenv("QPIPE_CRAWL_PRIVATE_ADDRESSES", "refuse")
    with DagsterInstance.get() as instance:
        result, failure = _run(instance, "crawled_pages", "inside-job", {"retries": 0})
    assert failure is not None
    assert "crawl_not_empty failed for concept 'inside-job': no page was fetched" in failure
    assert "QPIPE_CRAWL_PRIVATE_ADDRESSES=refuse" in failure
    table = result.output_for_node("crawled_pages")
    errors = sorted(table.column("error").to_pylist())
    assert errors == [
        f"refused: {host} is a loopback address; this crawl connects to public addresses only"
        " (QPIPE_CRAWL_PRIVATE_ADDRESSES=refuse)"
        for host in ("127.0.0.1", "::1")
    ]


def test_bad_private_addresses_setting_fails_the_crawl_naming_it(
    dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ConceptRegistry(dagster_home / "qpipe" / "concepts.sqlite").upsert(
        Concept.create("inside job", ["http://127.0.0.1:9/admin"])
    )
    monkeypatch.setenv("QPIPE_CRAWL_PRIVATE_ADDRESSES", "no")
    with DagsterInstance.get() as instance:
        _, failure = _run(instance, "crawled_pages", "inside-job")
    assert failure == "QPIPE_CRAWL_PRIVATE_ADDRESSES='no' is invalid: must be allow or refuse"
