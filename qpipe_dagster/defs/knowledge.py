"""Knowledge path: crawled_pages -> parsed_pages -> page_embeddings -> weaviate_objects.

Each asset is a thin wrapper: it reads its concept, calls the pure stage module, and reports
what happened as metadata and asset checks. All four are partitioned by concept.
"""

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
    TableColumn,
    TableSchema,
    asset,
)
from pydantic import Field

from qpipe_dagster.concepts import Concept, ConceptError, validate_slug, validate_url
from qpipe_dagster.crawl.outcomes import failed_by_class
from qpipe_dagster.crawl.runner import pipes_command, pipes_extras, read_crawled_pages
from qpipe_dagster.crawl.schema import CRAWLED_PAGES_SCHEMA, empty_crawl_reason
from qpipe_dagster.crawl.settings import CrawlSettings
from qpipe_dagster.defs.budget import enforce_compute, enforce_pages
from qpipe_dagster.defs.io import partition_folder
from qpipe_dagster.defs.partitions import concepts_partitions
from qpipe_dagster.defs.resources import (
    ConceptRegistryResource,
    EmbedderResource,
    VectorStoreResource,
)
from qpipe_dagster.defs.retries import transient_only
from qpipe_dagster.defs.trace import trace_ids
from qpipe_dagster.embed.encoder import Encoder
from qpipe_dagster.embed.incremental import EmbedStats, embed_chunks, explode_chunks
from qpipe_dagster.parse.chunk import Chunker
from qpipe_dagster.parse.extract import PARSER_VERSION
from qpipe_dagster.parse.table import (
    PARSED_PAGES_COLUMNS,
    PARSED_PAGES_SCHEMA,
    parse_pages,
    stale_parser_versions,
)
from qpipe_dagster.settings import SettingError, crawl_private_addresses_allowed
from qpipe_dagster.storage.arrow_files import (
    MAX_PART_BYTES,
    StoredTableError,
    part_sizes,
    read_table,
)
from qpipe_dagster.store.objects import objects_schema, with_trace
from qpipe_dagster.store.sync import sync_concept

GROUP = "knowledge"
OWNERS = ["team:knowledge"]
# A run executes its steps one at a time (concept_pipeline's in-process executor), ready steps in
# priority order: the knowledge chain goes first, so a concept is searchable before its backtest,
# which does not depend on it, has run.
SEARCH_FIRST = {"dagster/priority": "1"}

# The stored upstream columns each asset reads (checked before any work, see require_columns).
CRAWLED_COLUMNS_READ = ("url", "final_url", "fetched_at", "encoding", "html", "error")
PARSED_COLUMNS_READ = ("url", "title", "fetched_at", "parser_version", "chunks")
EMBEDDING_COLUMNS_READ = ("id", "model")


def column_schema(schema: pa.Schema, descriptions: dict[str, str]) -> TableSchema:
    """The Arrow schema as Dagster's column schema, so the UI lists columns with meanings."""
    return TableSchema(
        columns=[
            TableColumn(f.name, str(f.type), description=descriptions.get(f.name)) for f in schema
        ]
    )


def ipc_size_check(context: AssetExecutionContext, asset_name: str) -> AssetCheckResult:
    """Guard the 1 MB-per-stream budget on what the IO manager wrote for the previous output."""
    sizes = part_sizes(partition_folder(None, asset_name, context.partition_key))
    largest = max(sizes, default=0)
    return AssetCheckResult(
        check_name="ipc_parts_under_1mb",
        passed=largest <= MAX_PART_BYTES,
        severity=AssetCheckSeverity.WARN,
        metadata={"largest_part_bytes": largest, "parts": len(sizes)},
    )


def concept_key(context: AssetExecutionContext, asset_name: str) -> str:
    """The run's partition key, refused unless it is a concept slug.

    Dagster accepts any dynamic partition key (the UI's "add partition" box included). The IO
    manager refuses keys that are not one plain folder name ('../crawled_pages/x'); this refuses
    every other non-slug key too, in concept terms, before the asset does any work.
    """
    try:
        return validate_slug(context.partition_key)
    except ConceptError as exc:
        raise Failure(description=f"{asset_name}: partition {exc}") from None


def require_columns(
    table: pa.Table, expected: pa.Schema, names: tuple[str, ...], upstream: str, concept: str
) -> None:
    """Refuse a stored upstream table that lacks a column this code reads, or holds it as another
    type (written by another qpipe version), naming the folder and what to re-materialize; the
    bare KeyError: 'encoding' it used to give named neither."""
    faults = []
    for name in names:
        want = expected.field(name).type
        if name not in table.schema.names:
            faults.append(f"no column {name!r}")
        elif not table.schema.field(name).type.equals(want):
            faults.append(f"column {name!r} is {table.schema.field(name).type}, expected {want}")
    if faults:
        folder = partition_folder(None, upstream, concept)
        raise Failure(
            description=f"stored {upstream} of concept {concept!r} ({folder}) was written in "
            f"another format ({'; '.join(faults)}): materialize {upstream} for this concept "
            "again"
        )


_CRAWL_DEFAULTS = CrawlSettings()  # the stage owns the defaults; the run config only shows them


class CrawlConfig(Config):
    """How far and how hard to crawl; defaults suit news and blog sites (CrawlSettings')."""

    max_depth: int = Field(
        default=_CRAWL_DEFAULTS.max_depth, ge=0, description="same-site link depth from the seeds"
    )
    max_pages: int = Field(
        default=_CRAWL_DEFAULTS.max_pages, ge=1, description="at most this many URLs are requested"
    )
    max_bytes: int = Field(
        default=_CRAWL_DEFAULTS.max_bytes, ge=1024, description="larger responses are skipped"
    )
    timeout_s: float = Field(
        default=_CRAWL_DEFAULTS.timeout_s, gt=0, description="per-request timeout, seconds"
    )
    retries: int = Field(
        default=_CRAWL_DEFAULTS.retries,
        ge=0,
        description="retries per URL on timeouts, 5xx and 429",
    )
    obey_robots: bool = Field(
        default=_CRAWL_DEFAULTS.obey_robots, description="skip URLs that robots.txt disallows"
    )
    extra_seed_urls: list[str] = Field(
        default_factory=list, description="seeds for this run only, besides the concept's own"
    )

    def crawl_settings(self, *, allow_private_addresses: bool) -> CrawlSettings:
        """The stage's settings: these fields over CrawlSettings' defaults for the rest."""
        return CrawlSettings(
            allow_private_addresses=allow_private_addresses,
            **self.model_dump(exclude={"extra_seed_urls"}),
        )


def run_seeds(
    config: CrawlConfig, registry: ConceptRegistryResource, key: str
) -> tuple[Concept, list[str]]:
    """The concept and its seeds plus the run's extra ones, de-duplicated in order; a bad extra
    seed or a concept without any seed fails the run naming the fix."""
    extra = []
    for i, url in enumerate(config.extra_seed_urls):
        try:
            extra.append(validate_url(url))
        except ConceptError as exc:  # it said "seed URL ...", as if the concept's own were bad
            raise Failure(
                description=f"crawled_pages config extra_seed_urls[{i}] = {url!r}: {exc}"
            ) from None
    concept = registry.get(key)
    seeds = list(dict.fromkeys([*concept.seed_urls, *extra]))
    if not seeds:
        raise Failure(
            f"concept {concept.slug!r} has no seed URLs: add some with "
            f"`qpipe concepts add {concept.slug} --url https://...`"
        )
    return concept, seeds


def private_addresses_allowed() -> bool:
    """QPIPE_CRAWL_PRIVATE_ADDRESSES, a bad value failing the run with the setting's message."""
    try:
        return crawl_private_addresses_allowed()
    except SettingError as exc:
        raise Failure(description=str(exc)) from None


def crawl_results(
    table: pa.Table, slug: str, seeds: list[str], reported: Mapping[str, Any]
) -> tuple[Output, AssetCheckResult]:
    """The crawled_pages output with its metadata, and the blocking crawl_not_empty check."""
    ok = pc.sum(pc.is_null(table.column("error"))).as_py() or 0
    output = Output(
        table,
        metadata={
            **reported,
            "concept": slug,
            "seed_urls": MetadataValue.json(seeds),
            "pages_total": table.num_rows,
            "pages_ok": ok,
            # read by the metrics exporter: qpipe_pages_failed_total{error_class}
            "pages_failed_by_class": MetadataValue.json(
                failed_by_class(table.column("error").to_pylist())
            ),
        },
    )
    check = AssetCheckResult(
        check_name="crawl_not_empty",
        passed=ok > 0,
        severity=AssetCheckSeverity.ERROR,  # blocking + ERROR: the step, so the run, fails
        metadata={"pages_ok": ok, "pages_total": table.num_rows},
        description=(
            f"{ok} of {table.num_rows} pages fetched" if ok else empty_crawl_reason(table)
        ),
    )
    return output, check


@asset(
    op_tags=SEARCH_FIRST,
    partitions_def=concepts_partitions,
    group_name=GROUP,
    kinds={"scrapy", "arrow"},
    owners=OWNERS,
    check_specs=[
        AssetCheckSpec(
            "crawl_not_empty",
            asset="crawled_pages",
            description="At least one seed or linked page was fetched without an error. "
            "Blocking: a crawl that fetched nothing fails the run with the rows' errors.",
            blocking=True,
        )
    ],
    description="Raw pages crawled with Scrapy from the concept's seed URLs (same-site links, "
    "robots.txt obeyed). One row per requested URL; failures are rows with their error.",
)
@transient_only
def crawled_pages(
    context: AssetExecutionContext,
    config: CrawlConfig,
    concepts: ConceptRegistryResource,
    pipes_subprocess_client: PipesSubprocessClient,
):
    concept, seeds = run_seeds(config, concepts, context.partition_key)
    allow_private = private_addresses_allowed()
    enforce_pages(context, config.max_pages)  # QPIPE_BUDGET_MAX_PAGES, before any fetch
    settings = config.crawl_settings(allow_private_addresses=allow_private)
    with tempfile.TemporaryDirectory(prefix="qpipe-crawl-") as tmp:
        out_path = Path(tmp) / "crawled.arrow"
        invocation = pipes_subprocess_client.run(
            command=pipes_command(),
            context=context,
            extras=pipes_extras(seeds, settings, out_path),
        )
        reported = invocation.get_materialize_result().metadata or {}
        table = read_crawled_pages(out_path)
    output, check = crawl_results(table, concept.slug, seeds, reported)
    yield output
    yield check
    if not check.passed:  # Dagster's own blocking error names the check but not why: say it here
        raise Failure(
            description=f"crawl_not_empty failed for concept {concept.slug!r}: "
            f"{empty_crawl_reason(table)}. The rows are stored in crawled_pages for inspection."
        )
    # after the output is stored: over budget, the rows are kept and later steps do not run
    enforce_pages(context, config.max_pages, crawled=table.num_rows)
    enforce_compute(context, "crawled_pages")  # QPIPE_BUDGET_MAX_COMPUTE_S


class ParseConfig(Config):
    """Chunk sizes are in tokens of the embedding model's own tokenizer."""

    chunk_max_tokens: int = Field(
        default=200, ge=16, description="tokens per chunk; at most the model's max_seq_length"
    )
    chunk_overlap_tokens: int = Field(
        default=32, ge=0, description="tokens repeated from the previous chunk, for context"
    )


def parse_chunker(config: ParseConfig, encoder: Encoder) -> Chunker:
    """The chunker for this run, sized in the model's own tokens; sizes the model would
    silently truncate fail the run naming the config."""
    try:
        return Chunker(
            encoder.tokenizer,
            max_tokens=config.chunk_max_tokens,
            overlap_tokens=config.chunk_overlap_tokens,
            model_max_seq_length=encoder.max_seq_length,
        )
    except ValueError as exc:
        raise Failure(
            description=f"parsed_pages config chunk_max_tokens={config.chunk_max_tokens}, "
            f"chunk_overlap_tokens={config.chunk_overlap_tokens}: invalid chunking config: {exc}"
        ) from exc


@asset(
    op_tags=SEARCH_FIRST,
    partitions_def=concepts_partitions,
    group_name=GROUP,
    kinds={"polars", "arrow"},
    owners=OWNERS,
    check_specs=[
        AssetCheckSpec(
            "ipc_parts_under_1mb",
            asset="parsed_pages",
            description="Every stored Arrow IPC part is at most 1 MB (warns; the store splits "
            "larger tables).",
        )
    ],
    description="Main article text (boilerplate removed), title, language, date, links and "
    "token-aware chunks per page, as an Arrow table stored in IPC parts under 1 MB.",
    metadata={"dagster/column_schema": column_schema(PARSED_PAGES_SCHEMA, PARSED_PAGES_COLUMNS)},
)
@transient_only
def parsed_pages(
    context: AssetExecutionContext,
    config: ParseConfig,
    crawled_pages: pa.Table,
    embedder: EmbedderResource,
):
    concept = concept_key(context, "parsed_pages")
    require_columns(
        crawled_pages, CRAWLED_PAGES_SCHEMA, CRAWLED_COLUMNS_READ, "crawled_pages", concept
    )
    chunker = parse_chunker(config, embedder.encoder())
    started = time.perf_counter()
    parsed = parse_pages(crawled_pages, chunker)
    stage_seconds = time.perf_counter() - started  # extract + chunk, without model loading
    yield Output(
        parsed.table,
        metadata={
            "stage_seconds": round(stage_seconds, 3),
            "pages": parsed.table.num_rows,
            "pages_without_text": parsed.pages_without_text,
            "chunks": parsed.chunks,
            "words": parsed.words,
            "parser_version": PARSER_VERSION,
        },
    )
    yield ipc_size_check(context, "parsed_pages")


def warn_stale_parser(
    context: AssetExecutionContext, parsed_pages: pa.Table, concept: str
) -> list[str]:
    """Parser versions of stored parsed_pages older than this qpipe's, logged with the fix."""
    stale = stale_parser_versions(parsed_pages, PARSER_VERSION)
    if stale:
        context.log.warning(
            f"parsed_pages of concept {concept!r} were parsed by {', '.join(map(repr, stale))}, "
            f"not the current parser {PARSER_VERSION!r}: their chunks are embedded as they are; "
            "materialize parsed_pages for this concept again to re-parse the stored pages"
        )
    return stale


def previous_embeddings(context: AssetExecutionContext, concept: str) -> pa.Table | None:
    """The stored page_embeddings whose vectors may be reused; None when unreadable."""
    try:
        return read_table(partition_folder(None, "page_embeddings", concept))
    except StoredTableError as exc:  # only a cache of vectors: re-embed instead of failing
        context.log.warning(f"previous page_embeddings not reused, every chunk is embedded: {exc}")
        return None


def embedding_checks(
    table: pa.Table, encoder: Encoder, stats: EmbedStats
) -> list[AssetCheckResult]:
    """The model's declared dimension, the width it really outputs and the stored width agree,
    and no vector holds NaN."""
    dim = encoder.dim
    produced = int(encoder.encode(["dimension probe"]).shape[1])
    stored = table.schema.field("vector").type.list_size
    return [
        AssetCheckResult(
            check_name="embedding_dim_matches_model",
            passed=stored == dim == produced,
            metadata={"stored_dim": stored, "model_dim": dim, "produced_dim": produced},
        ),
        AssetCheckResult(
            check_name="no_nan_vectors",
            passed=stats.nan_rows == 0,
            metadata={"nan_rows": stats.nan_rows},
        ),
    ]


@asset(
    op_tags=SEARCH_FIRST,
    partitions_def=concepts_partitions,
    group_name=GROUP,
    kinds={"pytorch", "arrow"},
    owners=OWNERS,
    check_specs=[
        AssetCheckSpec(
            "embedding_dim_matches_model",
            asset="page_embeddings",
            description="Stored vector width = the model's declared dimension = what it outputs.",
        ),
        AssetCheckSpec(
            "no_nan_vectors",
            asset="page_embeddings",
            description="No chunk vector contains NaN (a NaN vector is unsearchable).",
        ),
    ],
    description="One row per chunk with its sentence-transformers vector (float32). Chunks whose "
    "text and model are unchanged since the last run reuse their stored vector.",
)
@transient_only
def page_embeddings(
    context: AssetExecutionContext,
    parsed_pages: pa.Table,
    embedder: EmbedderResource,
):
    concept = concept_key(context, "page_embeddings")
    require_columns(parsed_pages, PARSED_PAGES_SCHEMA, PARSED_COLUMNS_READ, "parsed_pages", concept)
    stale = warn_stale_parser(context, parsed_pages, concept)
    encoder = embedder.encoder()
    model, dim = encoder.model_id, encoder.dim
    chunks = explode_chunks(parsed_pages, concept, model)
    previous = previous_embeddings(context, concept)
    started = time.perf_counter()
    table, stats = embed_chunks(chunks, encoder, previous)
    stage_seconds = time.perf_counter() - started  # the encode itself, without model loading
    context.log.info(f"embedded {stats.embedded} chunks, reused {stats.reused} ({model})")
    yield Output(
        table,
        metadata={
            "stage_seconds": round(stage_seconds, 3),
            "model": model,
            "dim": dim,
            "chunks": stats.chunks,
            "embedded": stats.embedded,
            "reused": stats.reused,
            "device": str(encoder.model.device),
            "stale_parser_versions": MetadataValue.json(stale),
        },
    )
    yield from embedding_checks(table, encoder, stats)
    # after the output is stored: over budget, the vectors are kept and later steps do not run
    enforce_compute(context, "page_embeddings")  # QPIPE_BUDGET_MAX_COMPUTE_S


def embeddings_dim_for(page_embeddings: pa.Table, encoder: Encoder, concept: str) -> int:
    """The vector width to store `page_embeddings` under the configured model's collection.

    The stored table may come from an earlier run with another model (QPIPE_EMBED_MODEL changed,
    or `qpipe reembed` switched models, and only weaviate_objects was re-materialized): writing
    those vectors into the new model's collection would mix two models' vectors, and search
    would compare a query against vectors of the other model. That is refused, naming both.
    """
    vtype = (
        page_embeddings.schema.field("vector").type
        if "vector" in page_embeddings.schema.names
        else None
    )
    if vtype is None or not pa.types.is_fixed_size_list(vtype):
        raise Failure(
            description=f"stored page_embeddings of concept {concept!r} "
            f"({partition_folder(None, 'page_embeddings', concept)}) have "
            f"{'no vector column' if vtype is None else f'vector column of type {vtype}'}, "
            "expected fixed-size float32 lists: materialize page_embeddings for this concept again"
        )
    models = pc.unique(page_embeddings.column("model")).to_pylist()
    if page_embeddings.num_rows == 0:
        return encoder.dim  # nothing to tell the model by; the model's own width
    if models != [encoder.model_id]:
        raise Failure(
            description=f"page_embeddings of concept {concept!r} were embedded with "
            f"{', '.join(repr(m) for m in models)}, but the configured embedding model is "
            f"{encoder.model_id!r}: materialize page_embeddings (and weaviate_objects) again "
            "for this concept, so they are embedded with the configured model"
        )
    return vtype.list_size


@asset(
    op_tags=SEARCH_FIRST,
    partitions_def=concepts_partitions,
    group_name=GROUP,
    kinds={"weaviate", "lancedb"},
    owners=OWNERS,
    check_specs=[
        AssetCheckSpec(
            "store_matches_embeddings",
            asset="weaviate_objects",
            description="After the upsert the store holds exactly one object per chunk of "
            "page_embeddings for this concept (none missing, none stale).",
        )
    ],
    description="The concept's chunks with vectors in the vector store (Weaviate, or the local "
    "LanceDB default), keyed by deterministic UUIDs: re-runs update in place and chunks of "
    "vanished pages are deleted. Metadata: inserted/updated/unchanged/deleted by this run, "
    "objects_for_concept held afterwards.",
)
@transient_only
def weaviate_objects(
    context: AssetExecutionContext,
    page_embeddings: pa.Table,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
) -> MaterializeResult:
    concept = concept_key(context, "weaviate_objects")
    require_columns(
        page_embeddings, objects_schema(1), EMBEDDING_COLUMNS_READ, "page_embeddings", concept
    )
    encoder = embedder.encoder()
    dim = embeddings_dim_for(page_embeddings, encoder, concept)
    store = vector_store.open(model=encoder.model_id, dim=dim)
    # each written object names this run and its QStash message (`qpipe trace`)
    run_id, message_id = trace_ids(context)
    traced = with_trace(page_embeddings, run_id=run_id, message_id=message_id)
    synced = sync_concept(store, traced, concept)
    return MaterializeResult(
        metadata={
            "stage_seconds": round(synced.seconds, 3),
            "backend": store.backend,
            "collection": store.collection,
            **synced.figures(),
            "dagster/row_count": synced.total,
        },
        check_results=[
            AssetCheckResult(
                check_name="store_matches_embeddings",
                passed=synced.total == page_embeddings.num_rows,
                metadata={"objects_for_concept": synced.total, "chunks": page_embeddings.num_rows},
            )
        ],
    )
