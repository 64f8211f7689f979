"""Concept names, URLs and symbols: good input normalised, bad input refused with a clear reason."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qpipe_dagster.concepts import (
    Concept,
    ConceptError,
    ConceptRegistry,
    slugify,
    validate_slug,
    validate_url,
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
        ("halving \ud800", "unpaired UTF-16 surrogate"),  # what JSON's lone "\ud800" decodes to
        ("\udfffhalving", "unpaired UTF-16 surrogate"),
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
        ("https://example.com/\udc80", "unpaired UTF-16 surrogate"),
        ("https://example.com/a\x00b", "control characters"),
        ("https://example.com/\x7f", "control characters"),  # DEL: not whitespace
        # What the crawler refuses is refused here too, before a run is started for it.
        ("http://a..b.org/", "invalid host name 'a..b.org'"),
        ("http://.x.org/", "invalid host name '.x.org'"),
        ("http://x.org:0/", "invalid port"),
        ("http://x.org:99999/", "invalid port"),
        ("http://user:pw@x.org/", "embeds credentials"),
        ("http://[1::2::3]/", "not a valid URL"),  # urlsplit's own ValueError, once a 500
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


def _reference_slug(name: str) -> str:
    """The slug rule spelled out plainly (per-character checks, NFKD for every name)."""
    import re
    import unicodedata

    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise ConceptError("control characters")
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:64].rstrip("-")


@settings(max_examples=400)
@given(st.text(max_size=80))
def test_slugify_matches_the_plain_rule(name: str) -> None:
    """The regex fast paths (control characters, ASCII names) decide exactly as the plain rule."""
    if not name.strip():
        with pytest.raises(ConceptError, match="empty"):
            slugify(name)
        return
    try:
        expected = _reference_slug(name)
    except ConceptError:
        with pytest.raises(ConceptError, match="control characters"):
            slugify(name)
        return
    if not expected:
        with pytest.raises(ConceptError, match="no letters or digits"):
            slugify(name)
    else:
        assert slugify(name) == expected


@settings(max_examples=400)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=30))
def test_url_whitespace_check_is_str_isspace(tail: str) -> None:
    url = "https://example.com/" + tail
    has_space = any(ch.isspace() for ch in url.strip())
    try:
        validate_url(url)
    except ConceptError as exc:
        assert has_space == ("whitespace" in str(exc)), str(exc)
    else:
        assert not has_space


_HOSTS = st.one_of(
    st.from_regex(r"\A[a-zA-Z0-9\-._~!$&'()*+,;=%\u00e0-\u00ff]{1,20}\Z"),
    st.sampled_from(["[::1]", "[fe80::1%eth0]", "[::ffff:1.2.3.4]", "1.2.3.4", "[1::2::3]"]),
)


@settings(max_examples=400)
@given(
    st.sampled_from(["http", "https", "HTTP"]),
    _HOSTS,
    st.one_of(st.just(""), st.from_regex(r"\A:[0-9]{0,6}\Z")),
    st.one_of(st.just(""), st.from_regex(r"\A[/?#][\x21-\x7e\u00a0-\u00ff]{0,20}\Z")),
)
def test_a_seed_url_accepted_here_is_one_the_crawler_accepts(scheme, host, port, rest) -> None:
    """Refuse at submission what the crawl would refuse, never ConceptError's parent ValueError
    (the receiver answered 500 to a malformed [IPv6] host, and QStash retried it)."""
    from qpipe_dagster.crawl.urls import validate_seeds

    url = f"{scheme}://{host}{port}{rest}"
    try:
        validate_url(url)
    except ConceptError:
        return
    validate_seeds([url])  # raises ValueError naming the fault if the crawler would refuse it


def test_long_names_cut_to_one_key_are_not_merged(tmp_path) -> None:
    """Old code: two names agreeing on their first 64 key characters were cut to one slug, and
    the second silently renamed the first concept and merged its seed URLs into it."""
    reg = ConceptRegistry(tmp_path / "concepts.sqlite")
    stem = "bitcoin halving momentum with on chain confirmation and funding "
    first = Concept.create(stem + "rates", ["https://a.example/"])
    second = Concept.create(stem + "skew", ["https://b.example/"])
    assert first.slug == second.slug
    reg.upsert(first)
    with pytest.raises(ConceptError) as info:
        reg.upsert(second)
    message = str(info.value)
    assert repr(second.name) in message and repr(first.name) in message
    assert "differs within them" in message
    assert reg.get(first.slug) == first
    # The same long name again (any spelling of it) still merges.
    again = reg.upsert(Concept.create(stem.upper() + "RATES!", ["https://c.example/"]))
    assert again.seed_urls == ("https://a.example/", "https://c.example/")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this is not a database at all, just some text" * 100, "file is not a database"),
        (b"", "no such column"),  # an empty SQLite file is fine; see the foreign table below
    ],
)
def test_unusable_registry_file_is_named(tmp_path, content: bytes, reason: str) -> None:
    """Old code: sqlite3.DatabaseError 'file is not a database' / OperationalError 'no such
    column: symbol', naming no file."""
    import sqlite3

    from qpipe_dagster.concepts import RegistryError

    path = tmp_path / "concepts.sqlite"
    path.write_bytes(content)
    if not content:  # a registry of another layout: a concepts table without symbol
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE concepts (slug TEXT PRIMARY KEY, name TEXT, seed_urls TEXT)")
            db.execute("INSERT INTO concepts VALUES ('x', 'x', '[]')")
    with pytest.raises(RegistryError) as info:
        ConceptRegistry(path).get("x")
    assert str(path) in str(info.value) and reason in str(info.value)
    assert not isinstance(info.value, ConceptError)


def test_damaged_registry_row_is_named(tmp_path) -> None:
    """Old code: json.JSONDecodeError 'Expecting value: line 1 column 1' from get() and list()."""
    import sqlite3

    from qpipe_dagster.concepts import RegistryError

    path = tmp_path / "concepts.sqlite"
    reg = ConceptRegistry(path)
    reg.upsert(Concept.create("Fine", ["https://a.example/"]))
    reg.upsert(Concept.create("Broken", ["https://a.example/"]))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE concepts SET seed_urls = '[\"https://a.exa' WHERE slug = 'broken'")
    assert reg.get("fine").seed_urls == ("https://a.example/",)
    for call in (lambda: reg.get("broken"), reg.list):
        with pytest.raises(RegistryError) as info:
            call()
        message = str(info.value)
        assert str(path) in message and "concept 'broken'" in message
        assert "qpipe concepts remove broken" in message
