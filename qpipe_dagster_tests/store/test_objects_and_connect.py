"""Id/name helpers, and the real Weaviate client failing clearly when no server answers."""

from __future__ import annotations

import re
import socket
import time
import uuid

import pytest

from qpipe_dagster.store import VectorStoreError, collection_name, object_uuid, open_store

NAME_RE = re.compile(r"^[A-Z][_0-9A-Za-z]*$")  # Weaviate class names; also fine for LanceDB


def test_object_uuid_is_deterministic_and_distinct() -> None:
    a = object_uuid("momentum", "https://x.test/a", 0)
    assert a == object_uuid("momentum", "https://x.test/a", 0)
    assert uuid.UUID(a).version == 5
    others = {
        object_uuid("momentum", "https://x.test/a", 1),
        object_uuid("momentum", "https://x.test/b", 0),
        object_uuid("carry", "https://x.test/a", 0),
        object_uuid("momentum", "https://x.test/a0", 0),  # no ambiguity from joining fields
    }
    assert a not in others and len(others) == 4
    # pinned: a change of namespace would silently duplicate every stored object
    assert object_uuid("c", "u", 0) == "d1908353-c34f-59f6-8072-bfabd54e43f4"


def test_collection_name_per_model_and_dim() -> None:
    assert collection_name("all-MiniLM-L6-v2", 384) == "Chunks_all_minilm_l6_v2_d384"
    names = {
        collection_name("all-MiniLM-L6-v2", 384),
        collection_name("all-MiniLM-L6-v2", 256),
        collection_name("sentence-transformers/all-mpnet-base-v2", 768),
        collection_name("x" * 200, 384),
        collection_name("x" * 199, 384),
    }
    assert len(names) == 5 and all(NAME_RE.match(n) and len(n) < 80 for n in names)
    for bad_model, bad_dim in [("", 384), ("m", 0), ("m", -1)]:
        with pytest.raises(VectorStoreError):
            collection_name(bad_model, bad_dim)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_weaviate_unreachable_names_the_url(dagster_home) -> None:
    # dagster_home: the store's circuit breaker state lives there, not in the developer's
    url = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(
        VectorStoreError, match=rf"Weaviate server '{re.escape(url)}' is unreachable"
    ):
        open_store(model="m", dim=8, weaviate_url=url)
    assert time.monotonic() - started < 30


def test_weaviate_bad_urls(dagster_home) -> None:
    with pytest.raises(VectorStoreError, match="not an http"):
        open_store(model="m", dim=8, weaviate_url="ftp://example.test")
    with pytest.raises(VectorStoreError, match="needs an API key"):
        open_store(model="m", dim=8, weaviate_url="https://abc.c0.europe-west3.gcp.weaviate.cloud")


@pytest.mark.parametrize("blank", ["", "  "])
def test_blank_lance_path_means_the_default(dagster_home, tmp_path, monkeypatch, blank) -> None:
    """VectorStoreResource(lance_path='') from the launchpad: old code opened Path('') - the
    working directory - and wrote the store there."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    store = open_store(model="m", dim=8, lance_path=blank, weaviate_url=blank)
    assert store.backend == "lancedb"
    assert store.path == dagster_home / "qpipe" / "vectors"
    assert list(cwd.iterdir()) == []
