"""Snapshot of the asset graph: the seven pipeline assets, their deps, groups, kinds and the GPU tag,
plus the unpartitioned operations report."""

from dagster import AssetKey

from qpipe_dagster.definitions import defs

EXPECTED = {
    "crawled_pages": ("knowledge", set()),
    "parsed_pages": ("knowledge", {"crawled_pages"}),
    "page_embeddings": ("knowledge", {"parsed_pages"}),
    "weaviate_objects": ("knowledge", {"page_embeddings"}),
    "market_prices": ("validation", set()),
    "backtest_results": ("validation", {"market_prices"}),
    "strategy_recommendations": ("validation", {"backtest_results"}),
}


def _graph():
    return defs.resolve_asset_graph()


def test_assets_deps_and_groups() -> None:
    graph = _graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == set(EXPECTED) | {"daily_ops_report"}
    report = graph.get(AssetKey("daily_ops_report"))
    assert report.group_name == "operations" and report.partitions_def is None
    for name, (group, parents) in EXPECTED.items():
        node = graph.get(AssetKey(name))
        assert node.group_name == group, name
        assert {p.to_user_string() for p in node.parent_keys} == parents, name
        assert node.partitions_def is not None and node.partitions_def.name == "concepts", name


def test_gpu_tag_only_on_validator() -> None:
    graph = _graph()
    tagged = {
        k.to_user_string()
        for k in graph.get_all_asset_keys()
        if graph.get(k).tags.get("qpipe/compute") == "gpu"
    }
    assert tagged == {"backtest_results"}


def test_kinds_owners_and_descriptions() -> None:
    graph = _graph()
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    assert "scrapy" in specs["crawled_pages"].kinds
    assert "polars" in specs["parsed_pages"].kinds
    assert "weaviate" in specs["weaviate_objects"].kinds
    assert "vectorbt" in specs["backtest_results"].kinds
    for name, spec in specs.items():
        assert spec.description and len(spec.description) > 40, name
        assert spec.owners, name
    checks = {c.name for c in graph.asset_check_keys}
    assert {
        "crawl_not_empty",
        "embedding_dim_matches_model",
        "no_nan_vectors",
        "ipc_parts_under_1mb",
        "prices_monotonic",
    } <= checks


def test_pipeline_job_covers_every_asset() -> None:
    job = defs.resolve_job_def("concept_pipeline")
    assert job.partitions_def.name == "concepts"
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == set(EXPECTED)
