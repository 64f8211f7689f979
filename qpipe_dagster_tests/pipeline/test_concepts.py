"""Concept names, URLs and symbols: good input normalised, bad input refused with a clear reason."""

import pytest

from qpipe_dagster.concepts import (
    Concept,
    ConceptError,
    ConceptRegistry,
    slugify,
    validate_slug,
)


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Bitcoin Halving Momentum", "bitcoin-halving-momentum"),
        ("  ETH/BTC  ratio!! ", "eth-btc-ratio"),
        ("Café crème 2024", "cafe-creme-2024"),
        ("demo", "demo"),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("!!!", "no letters or digits"),
        ("x" * 201, "limit is 200"),
        ("bad\x00name", "control characters"),
        ("日本語", "no letters or digits"),
    ],
)
def test_bad_concept_names(name: str, reason: str) -> None:
    with pytest.raises(ConceptError, match=reason):
        slugify(name)


def test_long_names_make_bounded_slugs() -> None:
    assert len(slugify("momentum " * 20)) <= 64


@pytest.mark.parametrize("key", ["Bad Key", "trailing-", "-x", "a--b", "UPPER", ""])
def test_bad_partition_keys(key: str) -> None:
    with pytest.raises(ConceptError, match="not a valid concept key"):
        validate_slug(key)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "http:// or https://"),
        ("example.com", "http:// or https://"),
        ("http:///nohost", "no host"),
        ("http://exa mple.com/", "whitespace"),
        ("", "empty"),
    ],
)
def test_bad_seed_urls(url: str, reason: str) -> None:
    with pytest.raises(ConceptError, match=reason):
        Concept.create("x", [url])


def test_symbols() -> None:
    assert Concept.create("x", symbol="btc-usd").symbol == "BTC-USD"
    assert Concept.create("x", symbol="").symbol is None
    with pytest.raises(ConceptError, match="market symbol"):
        Concept.create("x", symbol="BTC USD!")


def test_registry_merges_and_survives_reopen(tmp_path) -> None:
    path = tmp_path / "concepts.sqlite"
    reg = ConceptRegistry(path)
    reg.upsert(Concept.create("Halving", ["https://a.example/"], "BTC-USD"))
    merged = reg.upsert(Concept.create("halving", ["https://b.example/", "https://a.example/"]))
    assert merged.seed_urls == ("https://a.example/", "https://b.example/")
    assert merged.symbol == "BTC-USD"
    again = ConceptRegistry(path).get("halving")
    assert again == merged
    assert [c.slug for c in ConceptRegistry(path).list()] == ["halving"]
    assert reg.remove("halving") and reg.get("halving") is None
