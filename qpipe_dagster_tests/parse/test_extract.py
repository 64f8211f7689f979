"""extract_article on small real-world-shaped pages: boilerplate, encodings, broken input."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qpipe_dagster.parse.extract import PARSER_VERSION, Article, extract_article, word_count
from qpipe_dagster_tests.parse.conftest import page_bytes

URL = "https://news.example.com/markets/momentum-crossovers"

ARTICLE_SENTENCES = (
    "The golden cross, a fifty-day moving average rising above the two-hundred-day average",
    "Researchers at several quantitative shops have found that the signal works best",
    "Backtests that ignore slippage tend to overstate returns by a wide margin",
    "Position sizing matters as much as the entry rule itself",
    "Critics point out that crossovers lag turning points by construction",
)
BOILERPLATE = (
    "We use cookies",
    "Contact the desk",
    "Share on Twitter",
    "Get the Morning Brief",
    "Sign up for our free newsletter",
    "Related stories",
    "A beginner guide to Bollinger bands",
    "RSI divergence, explained in charts",
    "All rights reserved",
    "Privacy policy",
    "Careers at the desk",
)


def _ok(article: Article) -> Article:
    assert article.error is None, article.error
    assert article.text
    assert article.word_count == word_count(article.text) > 0
    return article


def test_boilerplate_heavy_article() -> None:
    article = _ok(extract_article(page_bytes("boilerplate.html"), URL))
    for sentence in ARTICLE_SENTENCES:
        assert sentence in article.text
    for junk in BOILERPLATE:
        assert junk not in article.text, junk
    assert article.title == "Why Moving-Average Crossovers Still Work for Momentum Traders"
    assert article.published == "2024-03-15"
    assert article.language == "en"
    assert article.extractor == "trafilatura"


def test_links_absolute_deduplicated_without_fragments() -> None:
    links = extract_article(page_bytes("boilerplate.html"), URL).links
    assert "https://news.example.com/markets/bollinger-bands-guide" in links
    assert "https://news.example.com/crypto" in links  # "/crypto#top" lost its fragment
    assert "https://research.example.org/papers/crossover-costs.pdf" in links
    assert len(links) == len(set(links))
    assert all(re.match(r"https?://[^/\s#]+", link) and "#" not in link for link in links)
    assert not any(link.startswith("mailto:") for link in links)
    # document order is kept: the nav comes before the related list
    assert links.index("https://news.example.com/") < links.index(
        "https://news.example.com/markets/rsi-divergence"
    )


def test_table_and_code_block_are_kept() -> None:
    article = _ok(extract_article(page_bytes("table_code.html"), "https://quant.example.org/t"))
    assert "highs = close.rolling(20).max().shift(1)" in article.text
    assert "entries = close > highs" in article.text
    for cell in ("Breakout without costs", "41.2%", "-30.1%", "Max drawdown"):
        assert cell in article.text
    assert "Costs reduce the annual return noticeably" in article.text
    assert article.published == "2023-11-02"  # from JSON-LD
    assert "Tutorials" not in article.text


def test_windows_1251_declared_in_meta_only() -> None:
    article = _ok(extract_article(page_bytes("cp1251_meta.html"), "https://ru.example.com/a"))
    assert "Центральный банк сохранил ключевую ставку без изменений" in article.text
    assert article.language == "ru"
    assert article.title == "Ставка без изменений"


def test_shift_jis_declared_in_http_header_only() -> None:
    article = _ok(
        extract_article(
            page_bytes("shift_jis_header.html"), "https://jp.example.com/a", "Shift_JIS"
        )
    )
    assert "日本銀行は金融政策決定会合で、短期金利の誘導目標を据え置く" in article.text
    assert "\ufffd" not in article.text
    assert article.language == "ja"


def test_undeclared_latin1() -> None:
    article = _ok(extract_article(page_bytes("latin1_undeclared.html"), "https://fr.example.com/a"))
    assert "La Banque centrale européenne a laissé ses taux directeurs inchangés" in article.text
    assert article.language == "fr"


def test_malformed_html_with_garbage_bytes() -> None:
    article = _ok(extract_article(page_bytes("malformed.html"), "https://x.example.com/spreads"))
    assert "Liquidity in the order book thinned sharply" in article.text
    assert "Market makers pulled quotes for a few minutes" in article.text
    assert "Within an hour the spread had normalised" in article.text
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", article.text)


def test_str_input_matches_bytes_input() -> None:
    raw = page_bytes("boilerplate.html")
    assert extract_article(raw.decode("utf-8"), URL) == extract_article(raw, URL)


@pytest.mark.parametrize(
    "body",
    [b"", b"   \n\t ", "", page_bytes("empty_body.html"), "<html><body>   </body></html>"],
)
def test_empty_documents(body: bytes | str) -> None:
    article = extract_article(body, URL)
    assert article.error == "empty document"
    assert article.text == "" and article.word_count == 0


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "PNG"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj", "PDF"),
        (b"PK\x03\x04" + b"\x00" * 64, "ZIP"),
        (bytes(range(256)) * 8, "binary"),
        (b"just a plain sentence, no markup at all", "no markup"),
        ('{"price": 42000, "symbol": "BTC"}', "no markup"),
    ],
)
def test_non_html_is_rejected_with_reason(body: bytes | str, kind: str) -> None:
    article = extract_article(body, URL)
    assert article.error is not None and article.error.startswith("not HTML")
    assert kind.lower() in article.error.lower()
    assert article.text == ""


def test_page_without_main_content() -> None:
    html = (
        "<html><head><title>Menu</title><script>var tracking = 1;</script></head>"
        "<body><nav><a href='/a'>Home</a> <a href='/b'>About</a></nav></body></html>"
    )
    article = extract_article(html, URL)
    assert article.error == "no main content found"
    assert article.text == ""
    assert article.title == "Menu"  # metadata is still reported
    assert "https://news.example.com/a" in article.links


@pytest.mark.parametrize(
    ("open_tag", "close_tag", "depth"),
    [
        ("<div>", "</div>", 300),  # past libxml2's default limit of 256 levels
        ("<font size=2>", "", 1500),  # legacy page: a <font> never closed per paragraph
        ("<div class='wrap'>", "</div>", 5000),  # past even huge_tree's 2048 levels
    ],
)
def test_deeply_nested_page_keeps_its_text(open_tag: str, close_tag: str, depth: int) -> None:
    """The parser used to stop at its nesting limit: the page came back as 'no main content
    found' and its text was silently dropped."""
    body = _paragraphs("Nested", 4)
    html = f"<html><body>{open_tag * depth}{body}{close_tag * depth}<p>Tail of the page.</p>"
    article = _ok(extract_article(html.encode(), URL))
    assert "Nested paragraph 3 explains" in article.text


def test_text_node_over_10_mb_is_kept() -> None:
    html = "<html><body><p>" + "liquidity " * 1_100_000 + "</p></body></html>"
    article = _ok(extract_article(html.encode(), URL))
    assert article.word_count == 1_100_000


def test_lone_surrogate_in_str_input_does_not_drop_the_rest() -> None:
    # lxml stops reading a str at a lone surrogate: everything after it used to vanish
    html = f"<html><body><p>Broken \ud800 char.</p>{_paragraphs('After', 3)}</body></html>"
    article = _ok(extract_article(html, URL))
    assert "After paragraph 2 explains" in article.text
    assert "\ud800" not in article.text and "\ufffd" in article.text
    article.text.encode("utf-8")  # storable (Arrow/JSON need valid UTF-8)


@pytest.mark.parametrize(
    "body", [b"<!-- nothing here -->", b"<!DOCTYPE html>", "<html>  </html>", b"<html></html>"]
)
def test_markup_without_any_content_is_an_empty_document(body: bytes | str) -> None:
    # used to say "not HTML: the markup could not be parsed"
    assert extract_article(body, URL).error == "empty document"


def test_wrong_input_type_does_not_raise() -> None:
    article = extract_article(None, URL)  # type: ignore[arg-type]
    assert article.error is not None and "str or bytes" in article.error


def _paragraphs(prefix: str, n: int) -> str:
    return "".join(
        f"<p>{prefix} paragraph {i} explains how funding rates on perpetual futures pull the "
        f"contract price back towards the spot index, and why traders watch them closely.</p>"
        for i in range(n)
    )


def test_article_split_around_ads_is_reassembled() -> None:
    html = (
        "<html><body><article>"
        '<div class="grid"><div class="article-body chunk">' + _paragraphs("First", 3) + "</div>"
        '<div class="rail"><div class="ad-slot">Advertisement</div></div></div>'
        '<div class="grid"><div class="article-body chunk">' + _paragraphs("Second", 3) + "</div>"
        '<div class="rail"><div class="ad-slot">Advertisement</div></div></div>'
        "</article></body></html>"
    )
    article = _ok(extract_article(html, URL))
    assert "First paragraph 0" in article.text
    assert "Second paragraph 2" in article.text
    assert article.text.index("First paragraph 2") < article.text.index("Second paragraph 0")


def test_dont_miss_link_block_inside_article_is_removed() -> None:
    html = (
        "<html><body><article><h1>Funding rates</h1>"
        + _paragraphs("Body", 2)
        + "<p><strong>DON'T MISS</strong></p>"
        + "<p><a href='/x'>Bitcoin whales move coins</a> [INSIGHT]<br>"
        + "<a href='/y'>Ether options expiry looms</a> [ANALYSIS]</p>"
        + _paragraphs("Tail", 2)
        + "</article></body></html>"
    )
    article = _ok(extract_article(html, URL))
    assert "Tail paragraph 1" in article.text
    assert "DON'T MISS" not in article.text
    assert "Bitcoin whales" not in article.text


def test_teaser_cards_are_removed_but_article_headings_kept() -> None:
    cards = "".join(
        f'<div class="card"><h3><a href="/story-{i}">Teaser headline {i}</a></h3>'
        f"<p>Teaser summary {i} with a few words of description.</p></div>"
        for i in range(4)
    )
    html = (
        "<html><body><article><h1>Funding rates</h1>"
        + _paragraphs("Intro", 2)
        + "<h2>How the <a href='/glossary/basis'>basis</a> behaves</h2>"
        + _paragraphs("Basis", 2)
        + f'<div class="cards">{cards}</div>'
        + "</article></body></html>"
    )
    article = _ok(extract_article(html, URL))
    assert "How the basis behaves" in article.text
    assert "Basis paragraph 1" in article.text
    assert "Teaser" not in article.text


def test_headline_is_not_repeated_in_text() -> None:
    article = _ok(extract_article(page_bytes("boilerplate.html"), URL))
    assert not article.text.startswith(article.title or "?")
    assert article.text.startswith("The golden cross")


def test_parser_version_is_set() -> None:
    assert isinstance(PARSER_VERSION, str) and PARSER_VERSION


_FRAGMENTS = st.sampled_from(
    [
        "<p>",
        "</p>",
        "<div class='article-body'>",
        "</div>",
        "<a href='/x#y'>",
        "</a>",
        "<table>",
        "<td>",
        "<!--",
        "-->",
        "<script>",
        "</script>",
        "<meta charset='koi8-r'>",
        "text ",
        "é",
        "\x00",
        "<html>",
        "<body>",
        "<![CDATA[",
        "&amp;",
        "&#xD800;",
        "<?xml version='1.0'?>",
    ]
)


@settings(max_examples=40, deadline=None)
@given(parts=st.lists(_FRAGMENTS | st.text(max_size=30), max_size=40), as_bytes=st.booleans())
def test_never_raises_on_arbitrary_markup(parts: list[str], as_bytes: bool) -> None:
    html = "".join(parts)
    body: str | bytes = html.encode("utf-8", "surrogatepass") if as_bytes else html
    article = extract_article(body, "https://fuzz.example.com/")
    assert isinstance(article, Article)
    assert (article.error is None) == bool(article.text)


@settings(max_examples=30, deadline=None)
@given(body=st.binary(max_size=600))
def test_never_raises_on_random_bytes(body: bytes) -> None:
    article = extract_article(body, "https://fuzz.example.com/")
    assert isinstance(article, Article)


@pytest.mark.parametrize("declared", [None, "utf-16"])
def test_utf16_page_without_bom_is_not_binary(declared: str | None) -> None:
    # Its NUL bytes used to make it "not HTML: content looks like binary data"
    html = f"<html><body>{_paragraphs('Wide', 3)}</body></html>"
    article = _ok(extract_article(html.encode("utf-16-le"), URL, declared))
    assert "Wide paragraph 2 explains" in article.text
