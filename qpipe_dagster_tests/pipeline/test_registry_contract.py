"""The concept registry's contract, run on both backends: SQLite and PostgreSQL.

PostgreSQL is a real throwaway cluster (Debian's postgresql), a fresh database per test; the
registry is selected the way production selects it, through QPIPE_CONCEPTS_URL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from qpipe_dagster.concepts import (
    Concept,
    ConceptError,
    ConceptRegistry,
    RegistryError,
    default_registry,
)
from qpipe_dagster_tests.postgres_cluster import (  # noqa: F401  (fixtures)
    postgres_cluster,
    postgres_url,
)

Opener = Callable[[], ConceptRegistry]


@pytest.fixture(params=["sqlite", "postgres"])
def open_registry(
    request: pytest.FixtureRequest, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Opener:
    """Opens the registry as every qpipe process does: default_registry()."""
    if request.param == "postgres":
        monkeypatch.setenv("QPIPE_CONCEPTS_URL", request.getfixturevalue("postgres_url"))
    else:
        monkeypatch.delenv("QPIPE_CONCEPTS_URL", raising=False)
    return default_registry


def test_backend_is_selected_by_one_setting(open_registry: Opener, dagster_home: Path) -> None:
    import os

    reg = open_registry()
    if os.environ.get("QPIPE_CONCEPTS_URL"):
        assert type(reg).__name__ == "PostgresConceptRegistry"
        assert "secret-not-needed" not in str(reg.path)  # the password is never shown
        assert not (dagster_home / "qpipe" / "concepts.sqlite").exists()
    else:
        assert reg.path == dagster_home / "qpipe" / "concepts.sqlite"


def test_merges_and_survives_reopen(open_registry: Opener) -> None:
    reg = open_registry()
    reg.upsert(Concept.create("Halving", ["https://a.example/"], "BTC-USD"))
    merged = reg.upsert(Concept.create("halving", ["https://b.example/", "https://a.example/"]))
    assert merged.seed_urls == ("https://a.example/", "https://b.example/")
    assert merged.symbol == "BTC-USD"
    assert open_registry().get("halving") == merged
    reg.upsert(Concept.create("ab", ["https://c.example/"]))
    reg.upsert(Concept.create("a b", ["https://c.example/"]))
    reg.upsert(Concept.create("Ünïcode name", ["https://c.example/"], "eth-usd"))
    # byte order of slugs on both (PostgreSQL's locale collation would put 'a-b' after 'ab')
    assert [c.slug for c in open_registry().list()] == ["a-b", "ab", "halving", "unicode-name"]
    assert open_registry().get("unicode-name").name == "Ünïcode name"
    assert open_registry().get("unicode-name").symbol == "ETH-USD"
    assert reg.remove("halving") and reg.get("halving") is None
    assert reg.remove("halving") is False


def test_long_names_cut_to_one_key_are_not_merged(open_registry: Opener) -> None:
    reg = open_registry()
    stem = "bitcoin halving momentum with on chain confirmation and funding "
    first = Concept.create(stem + "rates", ["https://a.example/"])
    second = Concept.create(stem + "skew", ["https://b.example/"])
    reg.upsert(first)
    with pytest.raises(ConceptError, match="differs within them"):
        reg.upsert(second)
    assert reg.get(first.slug) == first


def test_concurrent_upserts_of_one_concept_keep_every_seed(open_registry: Opener) -> None:
    open_registry().upsert(Concept.create("shared", ["https://seed.example/0"]))
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            open_registry().upsert(Concept.create("shared", [f"https://seed.example/{i}"]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    seeds = set(open_registry().get("shared").seed_urls)
    assert seeds == {f"https://seed.example/{i}" for i in range(9)}


def test_damaged_row_is_named(open_registry: Opener) -> None:
    reg = open_registry()
    reg.upsert(Concept.create("Fine", ["https://a.example/"]))
    reg.upsert(Concept.create("Broken", ["https://a.example/"]))
    bad = "UPDATE {} SET seed_urls = '[\"https://a.exa' WHERE slug = 'broken'"
    if type(reg).__name__ == "PostgresConceptRegistry":
        with reg._pg() as cur:
            cur.execute(bad.format("qpipe_concepts"))
    else:
        import sqlite3

        with sqlite3.connect(reg.path) as db:
            db.execute(bad.format("concepts"))
    assert reg.get("fine").seed_urls == ("https://a.example/",)
    for call in (lambda: reg.get("broken"), reg.list):
        with pytest.raises(RegistryError) as info:
            call()
        assert "concept 'broken'" in str(info.value) and str(reg.path) in str(info.value)
        assert "qpipe concepts remove broken" in str(info.value)


def test_bad_setting_and_unreachable_server_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QPIPE_CONCEPTS_URL", "mysql://u:pw@h/db")
    with pytest.raises(RegistryError, match="QPIPE_CONCEPTS_URL starts with 'mysql'"):
        default_registry()
    import socket

    with socket.socket() as s:  # bound, not listening: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        monkeypatch.setenv("QPIPE_CONCEPTS_URL", f"postgresql://u:hunter2@127.0.0.1:{port}/db")
        with pytest.raises(RegistryError) as info:
            default_registry()
    text = str(info.value)
    assert "QPIPE_CONCEPTS_URL" in text and f"127.0.0.1:{port}" in text
    assert "hunter2" not in text
    # the containers' start-up check applies the same rule
    from qpipe_dagster.ops.env import env_problems

    assert env_problems("code-location", {"QPIPE_CONCEPTS_URL": "mysql://u:pw@h/db"}) == [
        "QPIPE_CONCEPTS_URL='mysql://u:pw@h/db' is invalid: it must be a postgresql:// URL "
        "(unset it for the SQLite registry under $DAGSTER_HOME/qpipe)"
    ]
