"""Metadata lookups (date, title, links) and the offline language guess."""

from __future__ import annotations

import lxml.html
import pytest

from qpipe_dagster.parse.language import detect_language, normalize_language_tag
from qpipe_dagster.parse.metadata import (
    extract_links,
    extract_published,
    extract_title,
    parse_date,
)


def _tree(html: str) -> lxml.html.HtmlElement:
    return lxml.html.document_fromstring(html)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2019-11-18T10:00:00Z", "2019-11-18"),
        ("2019/11/18", "2019-11-18"),
        ("20191118", "2019-11-18"),
        ("Mon, 18 Nov 2019 09:30:00 GMT", "2019-11-18"),
        ("2019-02-30", None),  # no such day
        ("1899-01-01", None),  # implausibly old for a web page
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_date(value: str | None, expected: str | None) -> None:
    assert parse_date(value) == expected


def test_published_sources_in_priority_order() -> None:
    meta = '<meta property="article:published_time" content="2021-05-04T12:00:00Z">'
    jsonld = (
        '<script type="application/ld+json">{"@graph": [{"datePublished": "2020-01-02"}]}</script>'
    )
    time = '<time datetime="2019-03-04">March 4</time>'
    assert (
        extract_published(_tree(f"<html><head>{meta}{jsonld}</head><body>{time}</body></html>"))
        == "2021-05-04"
    )
    assert (
        extract_published(_tree(f"<html><head>{jsonld}</head><body>{time}</body></html>"))
        == "2020-01-02"
    )
    assert extract_published(_tree(f"<html><body>{time}</body></html>")) == "2019-03-04"
    assert (
        extract_published(
            _tree("<html><body><p>x</p></body></html>"), "https://e.com/2018/07/09/story"
        )
        == "2018-07-09"
    )
    broken = '<script type="application/ld+json">{not json</script>'
    assert extract_published(_tree(f"<html><head>{broken}</head><body>x</body></html>")) is None


def test_title_fallbacks() -> None:
    assert (
        extract_title(
            _tree(
                "<html><head><title>Fed holds rates steady again - Example News</title></head><body>x</body></html>"
            )
        )
        == "Fed holds rates steady again"
    )
    assert (
        extract_title(_tree("<html><body><h1> Big   headline </h1></body></html>"))
        == "Big headline"
    )
    assert extract_title(_tree("<html><body><p>no title</p></body></html>")) is None


def test_links_respect_base_href_and_skip_non_http() -> None:
    html = (
        '<html><head><base href="https://cdn.example.net/docs/"></head><body>'
        '<a href="guide.html#intro">g</a><a href="guide.html">g2</a><a href="javascript:void(0)">j</a>'
        '<a href="ftp://files.example.net/x">f</a><a href="//other.example.org/p?q=1#f">o</a>'
        '<a href="http://[bad">b</a><a>no href</a></body></html>'
    )
    assert extract_links(_tree(html), "https://www.example.com/page") == (
        "https://cdn.example.net/docs/guide.html",
        "https://other.example.org/p?q=1",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "The central bank said that it was not ready to cut rates, and the market took it as a sign "
            "that policy will stay tight for longer than traders had expected in the spring.",
            "en",
        ),
        (
            "Die Zentralbank hat den Leitzins nicht verändert, und die Anleger sehen darin ein Zeichen, dass "
            "die Geldpolitik noch länger streng bleiben wird, als es viele erwartet hatten.",
            "de",
        ),
        (
            "El banco central dijo que no está listo para recortar las tasas, y el mercado lo tomó como una "
            "señal de que la política seguirá siendo estricta por más tiempo de lo que se esperaba.",
            "es",
        ),
        ("日本銀行は金融政策決定会合で、短期金利の誘導目標を据え置くことを決めました。", "ja"),
        ("中国人民银行宣布维持贷款市场报价利率不变，市场普遍预期年内仍有降息空间。", "zh"),
        ("한국은행은 기준금리를 동결했으며 시장은 연내 인하 가능성에 주목하고 있다.", "ko"),
    ],
)
def test_detect_language(text: str, expected: str) -> None:
    assert detect_language(text) == expected


def test_short_text_uses_declared_language() -> None:
    assert detect_language("BTC 42,000", "en-GB") == "en"
    assert detect_language("BTC 42,000", None) is None


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("en-US", "en"), ("pt_BR", "pt"), ("DE", "de"), ("", None), ("1234", None), (None, None)],
)
def test_normalize_language_tag(tag: str | None, expected: str | None) -> None:
    assert normalize_language_tag(tag) == expected
