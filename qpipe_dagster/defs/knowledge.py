"""Knowledge path: crawled_pages -> parsed_pages -> page_embeddings -> weaviate_objects.

Each asset is a thin wrapper: it reads its concept, calls the pure stage module, and reports
what happened as metadata and asset checks. All four are partitioned by concept.
"""

import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    Output,
    PipesSubprocessClient,
    asset,
)
from pydantic import Field

from qpipe_dagster.defs.io import partition_folder
from qpipe_dagster.defs.partitions import concepts_partitions
from qpipe_dagster.defs.resources import (
    ConceptRegistryResource,
    EmbedderResource,
    VectorStoreResource,
)
from qpipe_dagster.storage.arrow_files import MAX_PART_BYTES, read_table
from qpipe_dagster.store.objects import content_hash

GROUP = "knowledge"
OWNERS = ["team:knowledge"]

CHUNK_TYPE = pa.struct(
    [
        ("index", pa.int32()),
        ("text", pa.large_string()),
        ("token_count", pa.int32()),
        ("content_hash", pa.string()),
    ]
)
PARSED_PAGES_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("final_url", pa.string()),
        ("fetched_at", pa.timestamp("us", tz="UTC")),
        ("title", pa.string()),
        ("text", pa.large_string()),
        ("language", pa.string()),
        ("published", pa.string()),
        ("links", pa.list_(pa.string())),
        ("word_count", pa.int32()),
        ("content_hash", pa.string()),
        ("parser_version", pa.string()),
        ("extractor", pa.string()),
        ("error", pa.string()),
        ("chunk_max_tokens", pa.int32()),
        ("chunk_overlap_tokens", pa.int32()),
        ("chunks", pa.list_(CHUNK_TYPE)),
    ]
)


def ipc_size_check(context: AssetExecutionContext, asset_name: str) -> AssetCheckResult:
    """Guard the 1 MB-per-stream budget on what the IO manager wrote for the previous output."""
    from qpipe_dagster.storage.arrow_files import part_sizes

    sizes = part_sizes(partition_folder(None, asset_name, context.partition_key))
    largest = max(sizes, default=0)
    return AssetCheckResult(
        check_name="ipc_parts_under_1mb",
        passed=largest <= MAX_PART_BYTES,
        severity=AssetCheckSeverity.WARN,
        metadata={"largest_part_bytes": largest, "parts": len(sizes)},
    )


class CrawlConfig(Config):
    """How far and how hard to crawl; defaults suit news and blog sites."""

    max_depth: int = Field(default=2, ge=0, description="same-site link depth from the seeds")
    max_pages: int = Field(default=200, ge=1)
    max_bytes: int = Field(default=5_000_000, ge=1024, description="larger responses are skipped")
    timeout_s: float = Field(default=15.0, gt=0)
    retries: int = Field(default=2, ge=0)
    obey_robots: bool = True
    extra_seed_urls: list[str] = Field(default_factory=list)


@asset(
    partitions_def=concepts_partitions,
    group_name=GROUP,
    kinds={"scrapy", "arrow"},
    owners=OWNERS,
    check_specs=[AssetCheckSpec("crawl_not_empty", asset="crawled_pages")],
    description="Raw pages crawled with Scrapy from the concept's seed URLs (same-site links, "
    "robots.txt obeyed). One row per requested URL; failures are rows with their error.",
)
def crawled_pages(
    context: AssetExecutionContext,
    config: CrawlConfig,
    concepts: ConceptRegistryResource,
    pipes_subprocess_client: PipesSubprocessClient,
):
    from qpipe_dagster.concepts import validate_url
    from qpipe_dagster.crawl.runner import pipes_command, pipes_extras, read_crawled_pages
    from qpipe_dagster.crawl.settings import CrawlSettings

    concept = concepts.get(context.partition_key)
    seeds = list(dict.fromkeys([*concept.seed_urls, *map(validate_url, config.extra_seed_urls)]))
    if not seeds:
        raise Failure(
            f"concept {concept.slug!r} has no seed URLs: add some with "
            f"`qpipe concepts add {concept.slug} --url https://...`"
        )
    settings = CrawlSettings(
        max_depth=config.max_depth,
        max_pages=config.max_pages,
        max_bytes=config.max_bytes,
        timeout_s=config.timeout_s,
        retries=config.retries,
        obey_robots=config.obey_robots,
    )
    with tempfile.TemporaryDirectory(prefix="qpipe-crawl-") as tmp:
        out_path = Path(tmp) / "crawled.arrow"
        invocation = pipes_subprocess_client.run(
            command=pipes_command(),
            context=context,
            extras=pipes_extras(seeds, settings, out_path),
        )
        reported = invocation.get_materialize_result().metadata or {}
        table = read_crawled_pages(out_path)
    ok = pc.sum(pc.is_null(table.column("error"))).as_py() or 0
    yield Output(
        table,
        metadata={
            **{k: v for k, v in reported.items()},
            "concept": concept.slug,
            "seed_urls": MetadataValue.json(seeds),
            "pages_total": table.num_rows,
            "pages_ok": ok,
        },
    )
    yield AssetCheckResult(
        check_name="crawl_not_empty",
        passed=ok > 0,
        metadata={"pages_ok": ok, "pages_total": table.num_rows},
        description="at least one page was fetched successfully",
    )


class ParseConfig(Config):
    """Chunk sizes are in tokens of the embedding model's own tokenizer."""

    chunk_max_tokens: int = Field(default=200, ge=16)
    chunk_overlap_tokens: int = Field(default=32, ge=0)


@asset(
    partitions_def=concepts_partitions,
    group_name=GROUP,
    kinds={"polars", "arrow"},
    owners=OWNERS,
    check_specs=[AssetCheckSpec("ipc_parts_under_1mb", asset="parsed_pages")],
    description="Main article text (boilerplate removed), title, language, date, links and "
    "token-aware chunks per page, as an Arrow table stored in IPC parts under 1 MB.",
)
def parsed_pages(
    context: AssetExecutionContext,
    config: ParseConfig,
    crawled_pages: pa.Table,
    embedder: EmbedderResource,
):
    from qpipe_dagster.parse.chunk import Chunker
    from qpipe_dagster.parse.extract import PARSER_VERSION, extract_article

    encoder = embedder.encoder()
    try:
        chunker = Chunker(
            encoder.tokenizer,
            max_tokens=config.chunk_max_tokens,
            overlap_tokens=config.chunk_overlap_tokens,
            model_max_seq_length=encoder.max_seq_length,
        )
    except ValueError as exc:  # chunk sizes that the model would silently truncate
        raise Failure(description=f"invalid chunking config: {exc}") from exc
    rows = []
    for page in crawled_pages.to_pylist():
        if page["error"] is not None or page["html"] is None:
            continue  # failed or skipped fetches stay visible in crawled_pages
        article = extract_article(page["html"], page["final_url"] or page["url"], page["encoding"])
        chunks = [
            {
                "index": c.index,
                "text": c.text,
                "token_count": c.token_count,
                "content_hash": content_hash(c.text),
            }
            for c in chunker.chunk(article.text)
        ]
        rows.append(
            {
                "url": page["url"],
                "final_url": page["final_url"],
                "fetched_at": page["fetched_at"],
                "title": article.title,
                "text": article.text,
                "language": article.language,
                "published": article.published,
                "links": list(article.links),
                "word_count": article.word_count,
                "content_hash": content_hash(article.text),
                "parser_version": PARSER_VERSION,
                "extractor": article.extractor,
                "error": article.error,
                "chunk_max_tokens": config.chunk_max_tokens,
                "chunk_overlap_tokens": config.chunk_overlap_tokens,
                "chunks": chunks,
            }
        )
    table = pa.Table.from_pylist(rows, schema=PARSED_PAGES_SCHEMA)
    n_chunks = sum(len(r["chunks"]) for r in rows)
    yield Output(
        table,
        metadata={
            "pages": table.num_rows,
            "pages_without_text": sum(1 for r in rows if not r["text"]),
            "chunks": n_chunks,
            "words": sum(r["word_count"] for r in rows),
            "parser_version": PARSER_VERSION,
        },
    )
    yield ipc_size_check(context, "parsed_pages")


@asset(
    partitions_def=concepts_partitions,
    group_name=GROUP,
    kinds={"pytorch", "arrow"},
    owners=OWNERS,
    check_specs=[
        AssetCheckSpec("embedding_dim_matches_model", asset="page_embeddings"),
        AssetCheckSpec("no_nan_vectors", asset="page_embeddings"),
    ],
    description="One row per chunk with its sentence-transformers vector (float32). Chunks whose "
    "text and model are unchanged since the last run reuse their stored vector.",
)
def page_embeddings(
    context: AssetExecutionContext,
    parsed_pages: pa.Table,
    embedder: EmbedderResource,
):
    from qpipe_dagster.embed.incremental import embed_chunks, explode_chunks

    encoder = embedder.encoder()
    model, dim = encoder.model_id, encoder.dim
    chunks = explode_chunks(parsed_pages, context.partition_key, model)
    previous = read_table(partition_folder(None, "page_embeddings", context.partition_key))
    table, stats = embed_chunks(chunks, encoder, previous)
    context.log.info(f"embedded {stats.embedded} chunks, reused {stats.reused} ({model})")
    yield Output(
        table,
        metadata={
            "model": model,
            "dim": dim,
            "chunks": stats.chunks,
            "embedded": stats.embedded,
            "reused": stats.reused,
            "device": str(encoder.model.device),
        },
    )
    # The model's declared dimension, the width it really outputs, and the stored width agree.
    produced = int(encoder.encode(["dimension probe"]).shape[1])
    stored = table.schema.field("vector").type.list_size
    yield AssetCheckResult(
        check_name="embedding_dim_matches_model",
        passed=stored == dim == produced,
        metadata={"stored_dim": stored, "model_dim": dim, "produced_dim": produced},
    )
    yield AssetCheckResult(
        check_name="no_nan_vectors",
        passed=stats.nan_rows == 0,
        metadata={"nan_rows": stats.nan_rows},
    )


@asset(
    partitions_def=concepts_partitions,
    group_name=GROUP,
    kinds={"weaviate", "lancedb"},
    owners=OWNERS,
    description="The concept's chunks with vectors in the vector store (Weaviate, or the local "
    "LanceDB default), keyed by deterministic UUIDs: re-runs update in place and chunks of "
    "vanished pages are deleted.",
)
def weaviate_objects(
    context: AssetExecutionContext,
    page_embeddings: pa.Table,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
) -> MaterializeResult:
    encoder = embedder.encoder()
    dim = page_embeddings.schema.field("vector").type.list_size
    store = vector_store.open(model=encoder.model_id, dim=dim)
    counts = store.upsert(page_embeddings)
    deleted = store.delete_missing(
        context.partition_key, set(page_embeddings.column("id").to_pylist())
    )
    total = store.count(context.partition_key)
    return MaterializeResult(
        metadata={
            "backend": store.backend,
            "collection": store.collection,
            "inserted": counts.inserted,
            "updated": counts.updated,
            "unchanged": counts.unchanged,
            "deleted": deleted,
            "objects_for_concept": total,
        }
    )
