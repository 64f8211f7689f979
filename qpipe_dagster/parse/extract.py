"""Main-content extraction: raw HTML bytes -> clean article text plus page metadata.

Pipeline: decode (BOM / HTTP charset / ``<meta>`` / detection) -> parse once with lxml ->
metadata and links from the full page -> generic boilerplate pre-cleaning -> trafilatura in fast
mode without comments -> (if that finds little) trafilatura's full cascade on the untouched page
-> (if that fails too) a paragraph-density fallback -> line post-filters. Never raises: failures
come back as an :class:`Article` with ``error`` set and empty text.
"""

from __future__ import annotations

import codecs
import logging
import re
from dataclasses import dataclass
from typing import TypedDict

import lxml.etree
import lxml.html
import trafilatura
from lxml.html import HtmlElement

from qpipe_dagster.parse.boilerplate import filter_lines, merge_split_bodies, remove_boilerplate
from qpipe_dagster.parse.decode import decode_html, sniff_utf16
from qpipe_dagster.parse.language import detect_language
from qpipe_dagster.parse.metadata import (
    declared_language,
    extract_links,
    extract_published,
    extract_title,
    title_variants,
)

__all__ = ["PARSER_VERSION", "Article", "decode_html", "extract_article", "word_count"]

#: Bump whenever extraction output can change for the same input; stored with every object so
#: stale parses can be found and redone.
PARSER_VERSION = "qpipe-parse-1.1+trafilatura-" + trafilatura.__version__

#: Pages whose best extraction has fewer words than this report "no main content found".
MIN_WORDS = 10
# below this many characters the fast pass is considered to have missed the article
_MIN_FAST_CHARS = 250
_MIN_FALLBACK_CHARS = 80
_BINARY_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "PDF"),
    (b"\x89PNG", "PNG image"),
    (b"GIF8", "GIF image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"\x1f\x8b", "gzip data"),
    (b"RIFF", "RIFF media"),
    (b"OggS", "Ogg media"),
    (b"\x00\x00\x00", "binary data"),
    (b"ID3", "MP3 audio"),
    (b"BZh", "bzip2 data"),
    (b"\x7fELF", "ELF executable"),
    (b"{\\rtf", "RTF document"),
    (b"\xd0\xcf\x11\xe0", "MS Office document"),
)
_CONTROL_BYTES = bytes([*range(0, 9), 11, *range(14, 27), *range(28, 32), 127])
_MAX_CONTROL_SHARE = 0.05
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
_TAG = re.compile(r"<\s*[a-zA-Z!/][^>]*>")
_TOKEN = re.compile(r"\w+")
_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+")
# huge_tree: libxml2 otherwise stops at 256 nested elements and 10 MB text nodes and silently
# drops the rest of the page (legacy pages with unclosed <font>/<div> tags nest that deep)
_PARSER = lxml.html.HTMLParser(
    collect_ids=False,
    default_doctype=False,
    remove_comments=True,
    remove_pis=True,
    huge_tree=True,
)
# Even huge_tree stops at 2048 levels. Such a page is re-parsed with its container tags turned
# into spaces: the text survives, in the paragraphs, headings and list items that carry it.
_FLATTEN = re.compile(
    r"</?(?!(?:html|head|body|title|meta|link|base|script|style|noscript|template|p|br|h[1-6]"
    r"|li|a|time|pre|blockquote)[\s/>])[a-zA-Z][^>]*>"
)
_SURROGATES = re.compile(r"[\ud800-\udfff]")
_TRAFILATURA_OPTIONS = {
    "include_comments": False,
    "include_tables": True,
    "include_images": False,
    "include_links": False,
    "deduplicate": False,
    "output_format": "txt",
}
_FALLBACK_DROP = ("script", "style", "noscript", "nav", "header", "footer", "aside", "form")

# trafilatura logs every discarded page at WARNING; errors are reported in Article.error instead
logging.getLogger("trafilatura").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Article:
    """Extraction result for one page; ``error`` is None on success, else a readable reason."""

    title: str | None
    text: str
    language: str | None
    published: str | None
    links: tuple[str, ...]
    word_count: int
    extractor: str
    error: str | None = None


def word_count(text: str) -> int:
    """Words in ``text``; each CJK character counts as one (those scripts use no spaces)."""
    return len(_WORD.findall(text))


class _PageFields(TypedDict):
    """What is read from a page besides its main text."""

    title: str | None
    published: str | None
    links: tuple[str, ...]
    language: str | None


def _failed(
    error: str,
    *,
    title: str | None = None,
    language: str | None = None,
    published: str | None = None,
    links: tuple[str, ...] = (),
) -> Article:
    return Article(
        title=title,
        text="",
        language=language,
        published=published,
        links=links,
        word_count=0,
        extractor="none",
        error=error,
    )


def _binary_kind(body: bytes) -> str | None:
    head = body[:16]
    for magic, kind in _BINARY_MAGIC:
        if head.startswith(magic):
            return kind
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or sniff_utf16(body):
        return None  # UTF-16/32 text is full of NULs; decode_html handles it
    sample = body[:4096]
    # markup has (almost) no C0 control bytes; media and archives are full of them
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    if controls > len(sample) * _MAX_CONTROL_SHARE:
        return "binary data"
    return None


_RESOURCE_LIMIT = lxml.etree.ErrorTypes.ERR_RESOURCE_LIMIT


def _too_deep() -> bool:
    """True if the last parse stopped at libxml2's nesting limit (the rest of the page is lost)."""
    return any(e.type == _RESOURCE_LIMIT for e in _PARSER.error_log)


def _without_surrogates(text: str) -> str:
    """``text`` with lone surrogates as U+FFFD: lxml stops reading at one, dropping the rest of
    the page. (Decoded bytes never hold any; only str input can.)"""
    if text.isascii():  # O(1)
        return text
    try:
        text.encode("utf-8")  # several times faster than scanning with a regex
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)
    return text


def _parse(markup: str) -> HtmlElement | None:
    markup = _CONTROL_CHARS.sub("", _XML_DECLARATION.sub("", markup, count=1))
    try:
        tree = lxml.html.document_fromstring(markup, parser=_PARSER)
        if _too_deep():
            tree = lxml.html.document_fromstring(_FLATTEN.sub(" ", markup), parser=_PARSER)
    except (lxml.etree.ParserError, ValueError):
        return None
    return tree if tree is not None and len(tree) else None


def _normalize_text(text: str) -> str:
    lines = [" ".join(line.split()) for line in text.replace("\r", "").split("\n")]
    out: list[str] = []
    for line in lines:
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    return "\n".join(out).strip()


def _drop_headline(text: str, headlines: list[str]) -> str:
    """Remove a leading line that repeats the headline: it is ``Article.title`` already, and
    repeating it in the body would weigh it twice in every embedding of the first chunk."""
    first, _, rest = text.partition("\n")
    words = _TOKEN.findall(first.lower())
    if words and any(words == _TOKEN.findall(h.lower()) for h in headlines):
        return rest.lstrip("\n")
    return text


def _fallback_text(tree: HtmlElement) -> str:
    """Paragraph text of the element holding the most of it: readability's core idea, simple."""
    work = tree  # a fresh parse owned by the caller: safe to prune in place
    for element in list(work.iter(*_FALLBACK_DROP)):
        if element.getparent() is not None:
            element.getparent().remove(element)
    best, best_len = None, 0
    scores: dict[HtmlElement, int] = {}
    for p in work.iter("p", "pre", "li", "td"):
        length = len(p.text_content().strip())
        parent = p.getparent()
        if parent is None or length < 25:
            continue
        scores[parent] = scores.get(parent, 0) + length
        if scores[parent] > best_len:
            best, best_len = parent, scores[parent]
    if best is None:
        body = work.find(".//body")
        return (body if body is not None else work).text_content()
    blocks = [e.text_content().strip() for e in best.iter("p", "pre", "li", "td", "h2", "h3")]
    return "\n".join(b for b in blocks if b)


def _run_trafilatura(tree: HtmlElement, url: str, fast: bool) -> str:
    try:
        text = trafilatura.extract(tree, url=url, fast=fast, **_TRAFILATURA_OPTIONS)
    except Exception:  # third-party parser on hostile input: fall back instead
        return ""
    return text or ""


def _main_text(markup: str, tree: HtmlElement, url: str) -> tuple[str, str]:
    """(text, extractor) using progressively more expensive strategies; cleans ``tree``."""
    merge_split_bodies(tree)
    remove_boilerplate(tree)
    text = filter_lines(_run_trafilatura(tree, url, fast=True))
    if len(text) >= _MIN_FAST_CHARS:
        return text, "trafilatura"
    # little or nothing: maybe our cleaning or fast mode cut too much; try the full cascade on
    # a fresh, uncleaned parse (re-parsing is cheaper than copying every tree up front)
    tree = _parse(markup)
    if tree is None:
        return text, "trafilatura"
    full = filter_lines(_run_trafilatura(tree, url, fast=False))
    if len(full) > len(text):
        text = full
    if len(text) >= _MIN_FALLBACK_CHARS:
        return text, "trafilatura-full"
    fallback = filter_lines(_normalize_text(_fallback_text(tree)))
    if len(fallback) > len(text):
        return fallback, "fallback"
    return text, "trafilatura-full"


def extract_article(html: str | bytes, url: str, declared_encoding: str | None = None) -> Article:
    """Extract the main article of one page. Never raises; see ``Article.error`` on failure.

    ``declared_encoding`` is the charset from the HTTP ``Content-Type`` header (bytes input).
    """
    try:
        return _extract(html, url, declared_encoding)
    except Exception as exc:  # contract: a bad page must not stop a batch
        return _failed(f"extraction failed: {type(exc).__name__}: {exc}")


def _extract(html: str | bytes, url: str, declared_encoding: str | None) -> Article:
    if isinstance(html, bytes | bytearray):
        body = bytes(html)
        if not body.strip():
            return _failed("empty document")
        kind = _binary_kind(body)
        if kind:
            return _failed(f"not HTML: content looks like {kind}")
        markup = decode_html(body, declared_encoding)
    elif isinstance(html, str):
        markup = _without_surrogates(html)
    else:
        return _failed(f"not HTML: expected str or bytes, got {type(html).__name__}")
    if not markup.strip():
        return _failed("empty document")
    if not _TAG.search(markup[:65536]):
        return _failed("not HTML: no markup tags found")

    tree = _parse(markup)
    if tree is None:
        if not _TAG.sub(" ", markup).strip():  # only comments, a doctype or empty elements
            return _failed("empty document")
        return _failed("not HTML: the markup could not be parsed")
    title = extract_title(tree)
    headlines = title_variants(tree)
    published = extract_published(tree, url)
    links = extract_links(tree, url)
    declared_lang = declared_language(tree)

    text, extractor = _main_text(markup, tree, url)
    text = _drop_headline(_normalize_text(text), headlines)
    if extractor != "trafilatura" and word_count(text) < MIN_WORDS:
        text = ""  # a few stray words rescued from menus are not an article
    fields: _PageFields = {
        "title": title,
        "published": published,
        "links": links,
        "language": detect_language(text, declared_lang) if text else None,
    }
    if not text:
        has_text = bool(_TAG.sub(" ", markup).strip())
        error = "no main content found" if has_text else "empty document"
        return _failed(error, **fields)
    return Article(
        text=text,
        word_count=word_count(text),
        extractor=extractor,
        error=None,
        **fields,
    )
