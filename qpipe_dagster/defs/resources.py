"""Resources: one per outside system (model, vector store, price files, concept registry).

Production switches are environment variables read when the code location loads:
WEAVIATE_URL / WEAVIATE_API_KEY select Weaviate over the local LanceDB store, QPIPE_PRICES_DIR
points at real price files, QPIPE_EMBED_MODEL / QPIPE_EMBED_DEVICE pick the model.
"""

from pathlib import Path
from typing import TypedDict

from dagster import ConfigurableResource, Failure, PipesSubprocessClient
from pydantic import Field

from qpipe_dagster.concepts import (
    Concept,
    ConceptError,
    ConceptRegistry,
    RegistryError,
    default_registry,
    validate_slug,
)
from qpipe_dagster.defs.io import ArrowIPCIOManager
from qpipe_dagster.embed.encoder import DEFAULT_MODEL, Encoder
from qpipe_dagster.embed.rotation import active_model
from qpipe_dagster.settings import default_symbol, embed_device, env_value
from qpipe_dagster.store.base import VectorStore, open_store

DEMO_PRICES_DIR = Path(__file__).resolve().parents[1] / "demo" / "prices"


class ConceptRegistryResource(ConfigurableResource):
    """The shared concept registry (SQLite under DAGSTER_HOME unless a path is given)."""

    path: str | None = None

    def registry(self) -> ConceptRegistry:
        return ConceptRegistry(Path(self.path)) if self.path else default_registry()

    def get(self, slug: str) -> Concept:
        """The registered concept, or a Failure whose message says how to register it."""
        try:
            validate_slug(slug)
        except ConceptError as exc:
            raise Failure(description=str(exc)) from exc
        try:
            concept = self.registry().get(slug)
        except RegistryError as exc:  # names the file; a Failure shows it without a traceback
            raise Failure(description=str(exc)) from exc
        if concept is None:
            raise Failure(
                description=f"concept {slug!r} is not registered: add it with "
                f"`qpipe concepts add {slug} --url https://...` (or submit it through QStash)"
            )
        return concept


class EmbedderResource(ConfigurableResource):
    """The sentence-transformers model; loaded once per process and shared by every asset."""

    model_name: str = Field(
        default=DEFAULT_MODEL, description="sentence-transformers model name or path"
    )
    device: str = Field(default="auto", description="auto (CUDA when present), cpu, cuda")
    batch_size: int = Field(default=64, ge=1)
    truncate_dim: int | None = Field(default=None, description="Matryoshka truncation, e.g. 256")

    def encoder(self) -> Encoder:
        return Encoder(self.model_name, self.device, self.batch_size, self.truncate_dim)


class VectorStoreResource(ConfigurableResource):
    """Weaviate when weaviate_url is set, else the embedded LanceDB store under DAGSTER_HOME."""

    weaviate_url: str | None = None
    weaviate_api_key: str | None = None
    lance_path: str | None = None
    batch_size: int = Field(default=2000, ge=1)

    def open(self, model: str, dim: int, *, create: bool = True) -> VectorStore:
        return open_store(
            model=model,
            dim=dim,
            lance_path=self.lance_path,
            weaviate_url=self.weaviate_url or None,
            weaviate_api_key=self.weaviate_api_key or None,
            batch_size=self.batch_size,
            create=create,
        )


class PriceSourceResource(ConfigurableResource):
    """Where market prices come from: a folder of SYMBOL.csv / .parquet files."""

    prices_dir: str = Field(default=str(DEMO_PRICES_DIR))
    default_symbol: str = "BTC-USD"


class QpipeResources(TypedDict):
    """The resources every qpipe code location binds, by key."""

    io_manager: ArrowIPCIOManager
    concepts: ConceptRegistryResource
    embedder: EmbedderResource
    vector_store: VectorStoreResource
    prices: PriceSourceResource
    pipes_subprocess_client: PipesSubprocessClient


def default_resources() -> QpipeResources:
    """The local defaults, with the production switches read from the environment.

    Blank variables count as unset (as in `python -m qpipe_dagster.ops.env`); an invalid one
    raises SettingError naming it, so the code location fails to load saying what to fix.
    """
    model = active_model()

    return {
        "io_manager": ArrowIPCIOManager(),
        "concepts": ConceptRegistryResource(),
        "embedder": EmbedderResource(
            model_name=model.name,
            truncate_dim=model.truncate_dim,
            device=embed_device(),
        ),
        "vector_store": VectorStoreResource(
            weaviate_url=env_value("WEAVIATE_URL"),
            weaviate_api_key=env_value("WEAVIATE_API_KEY"),
            lance_path=env_value("QPIPE_LANCE_PATH"),
        ),
        "prices": PriceSourceResource(
            prices_dir=env_value("QPIPE_PRICES_DIR") or str(DEMO_PRICES_DIR),
            default_symbol=default_symbol(),
        ),
        "pipes_subprocess_client": PipesSubprocessClient(),
    }
