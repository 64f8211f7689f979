"""Backends for the store contract suite: LanceDB always, Weaviate when WEAVIATE_URL is set."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qpipe_dagster.store import VectorStore, open_store

NO_WEAVIATE = "no Weaviate server configured: set WEAVIATE_URL to run the contract suite against it"


class Backend:
    """Opens stores of one backend at one location, and drops what it opened afterwards."""

    def __init__(self, name: str, location: str) -> None:
        self.name = name
        self.location = location
        self.prefix = f"t{uuid.uuid4().hex[:8]}"  # unique per test on a shared server
        self._opened: list[VectorStore] = []

    def open(self, model: str = "model", dim: int = 16, batch_size: int = 2000) -> VectorStore:
        kw: dict = {"model": f"{self.prefix}-{model}", "dim": dim, "batch_size": batch_size}
        if self.name == "weaviate":
            kw.update(
                weaviate_url=self.location, weaviate_api_key=os.environ.get("WEAVIATE_API_KEY")
            )
        else:
            kw.update(lance_path=self.location)
        store = open_store(**kw)
        self._opened.append(store)
        return store

    def model(self, model: str = "model") -> str:
        return f"{self.prefix}-{model}"

    def cleanup(self) -> None:
        for store in self._opened:
            if self.name == "weaviate":
                try:
                    store.drop()
                finally:
                    store.close()


@pytest.fixture(params=["lancedb", "weaviate"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "weaviate":
        url = os.environ.get("WEAVIATE_URL")
        if not url:
            pytest.skip(NO_WEAVIATE)
        b = Backend("weaviate", url)
    else:
        b = Backend("lancedb", str(tmp_path / "vectors"))
    yield b
    b.cleanup()


@pytest.fixture
def store(backend: Backend) -> VectorStore:
    return backend.open()
