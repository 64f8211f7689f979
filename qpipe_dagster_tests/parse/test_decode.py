"""decode_html: BOM, HTTP charset, <meta>, detection; never raises on bad bytes."""

from __future__ import annotations

import codecs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qpipe_dagster.parse.decode import decode_html, normalize_encoding, sniff_meta_charset
from qpipe_dagster_tests.parse.conftest import page_bytes

RUSSIAN = "Центральный банк сохранил ключевую ставку"
JAPANESE = "日本銀行は金融政策決定会合で"


def test_meta_charset_only_windows_1251() -> None:
    text = decode_html(page_bytes("cp1251_meta.html"))
    assert RUSSIAN in text
    assert "\ufffd" not in text


def test_http_declared_shift_jis() -> None:
    text = decode_html(page_bytes("shift_jis_header.html"), "Shift_JIS")
    assert JAPANESE in text
    assert "\ufffd" not in text


def test_undeclared_latin1_is_detected() -> None:
    text = decode_html(page_bytes("latin1_undeclared.html"))
    assert "La Banque centrale européenne a laissé ses taux directeurs inchangés" in text
    assert "\ufffd" not in text


def test_bom_wins_over_declarations() -> None:
    html = '<html><head><meta charset="windows-1251"></head><body>Ünïcödé ✓</body></html>'
    for bom, codec in (
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ):
        assert decode_html(bom + html.encode(codec), "iso-8859-1") == html


def test_http_charset_beats_meta() -> None:
    body = f'<meta charset="utf-8"><p>{RUSSIAN}</p>'.encode("koi8-r")
    assert RUSSIAN in decode_html(body, "koi8-r")


def test_wrong_declaration_falls_back_to_meta() -> None:
    # The server claims UTF-8, but the bytes are cp1251 as the page's own <meta> says.
    body = f'<meta http-equiv="Content-Type" content="text/html; charset=windows-1251"><p>{RUSSIAN}</p>'
    assert RUSSIAN in decode_html(body.encode("cp1251"), "utf-8")


def test_iso_8859_1_label_decodes_as_windows_1252() -> None:
    # Browsers (WHATWG) read "iso-8859-1" as cp1252: curly quotes at 0x93/0x94 must survive.
    body = "<p>\u201cquoted\u201d caf\u00e9</p>".encode("cp1252")
    assert decode_html(body, "ISO-8859-1") == "<p>\u201cquoted\u201d caf\u00e9</p>"


def test_unknown_declared_charset_is_ignored() -> None:
    body = f"<p>{RUSSIAN}</p>".encode()
    assert RUSSIAN in decode_html(body, "x-no-such-charset")


def test_garbage_bytes_are_replaced_not_raised() -> None:
    body = "<p>price impact é</p>".encode() + b"\xff\xfe\xc3"
    text = decode_html(body, "utf-8")
    assert text.startswith("<p>price impact é</p>")
    assert "\ufffd" in text


def test_empty_body() -> None:
    assert decode_html(b"") == ""


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("UTF-8", "utf-8"),
        ('"windows-1251"', "cp1251"),
        ("latin1", "cp1252"),
        ("Shift_JIS", "cp932"),
        ("gb2312", "gb18030"),
        ("bogus", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_encoding(label: str | None, expected: str | None) -> None:
    assert normalize_encoding(label) == expected


def test_sniff_meta_charset_forms() -> None:
    assert sniff_meta_charset(b'<meta charset="koi8-r">') == codecs.lookup("koi8-r").name
    legacy = b"<META HTTP-EQUIV=content-type CONTENT='text/html; charset=EUC-JP'>"
    assert sniff_meta_charset(legacy) == codecs.lookup("euc-jp").name
    assert sniff_meta_charset(b'<meta charset="utf-16">') == "utf-8"
    assert sniff_meta_charset(b"<p>no meta here</p>") is None


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=400), declared=st.sampled_from([None, "utf-8", "cp1251", "junk"]))
def test_never_raises(body: bytes, declared: str | None) -> None:
    assert isinstance(decode_html(body, declared), str)


# -- servers that lie about the charset ----------------------------------------------


@pytest.mark.parametrize("declared", ["iso-8859-1", "windows-1252", "windows-1251", "koi8-r"])
def test_utf8_page_declared_single_byte_is_read_as_utf8(declared: str) -> None:
    # The classic misconfiguration (Apache's old AddDefaultCharset): the bytes are valid
    # UTF-8 with multi-byte characters, which no real single-byte page is. Used to be mojibake.
    html = f"<p>{RUSSIAN} — café, naïve</p>"
    assert decode_html(html.encode(), declared) == html


@pytest.mark.parametrize("declared", ["utf-16", "utf-16le", "UTF-16BE", "utf-32"])
def test_utf16_declared_on_an_8_bit_page_is_ignored(declared: str) -> None:
    # Without NUL bytes the markup cannot be UTF-16: decoding it so gave CJK garbage and the
    # page was reported as "not HTML: no markup tags found".
    html = "<html><body><p>Rates were held steady.</p></body></html>"
    assert decode_html(html.encode(), declared) == html
    assert decode_html(f"<p>{RUSSIAN}</p>".encode("cp1251"), declared) == f"<p>{RUSSIAN}</p>"


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("declared", [None, "utf-16", "utf-8"])
def test_utf16_without_bom(codec: str, declared: str | None) -> None:
    html = f"<html><body><p>{RUSSIAN} — {JAPANESE}</p><p>The rate was held.</p></body></html>"
    assert decode_html(html.encode(codec), declared) == html


def test_utf8_page_with_a_few_stray_cp1252_bytes() -> None:
    # A UTF-8 article with a footer pasted in from a windows-1252 source, no declaration:
    # detection used to pick one 8-bit charset for the whole page, garbling every accent.
    article = "<p>Le café, la crème brûlée — très bon, naïve «quote»</p>"
    footer = "<footer>© 2020 Société</footer>"
    text = decode_html(article.encode() + footer.encode("cp1252"))
    assert text == article + footer
