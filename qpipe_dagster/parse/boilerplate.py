"""Boilerplate removal around trafilatura: DOM pre-cleaning and line post-filters.

Trafilatura finds the main content well but keeps some page furniture that sits *inside* the
article container (newsletter boxes, "don't miss" link blocks, related-story lists, reprint
tools, legal footers) and, when an article body is split into several sibling containers
around ads, keeps only the first. These rules are generic (class/id vocabulary, link density,
short call-to-action lines), each guarded so it can never remove the bulk of the article.
"""

from __future__ import annotations

import re

import lxml.etree as etree  # lxml has no stubs; the submodule import resolves
from lxml.html import HtmlElement


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# class/id tokens that mark page furniture, not article text
_BOILERPLATE_TOKENS = _words(
    """newsletter newsletters subscribe subscription subscriptions signup sign-up promo promos
    promotion cta related recommended recommendations recirc recirculation sharing share
    sharebar sharetools social socials reprint reprints cookie cookies consent gdpr breadcrumb
    breadcrumbs outbrain taboola trending popular mostread most-read more-stories readmore
    read-more tools toolbar print-tools byline-social author-bio authorbio bio advert
    advertisement sponsor sponsored
    """
)
_BODY_CLASS_HINT = re.compile(r"body|content|article|text|story|entry|post", re.IGNORECASE)
_COMMENT_HINT = re.compile(r"comment|reply|teaser|card|promo|related", re.IGNORECASE)
_MERGE_MAX_DEPTH = 3
_MIN_CHUNK_CHARS = 200
_BOILERPLATE_NAME = re.compile(
    r"(?<![a-z0-9])(?:" + "|".join(sorted(map(re.escape, _BOILERPLATE_TOKENS))) + r")(?![a-z0-9])"
)
# attribute nodes, not elements: testing the names first and creating element proxies only for
# hits is several times faster than walking every element
_NAME_ATTRS = etree.XPath("//@class | //@id")
_MERGE_CLASS_ATTRS = etree.XPath("//div/@class | //section/@class | //article/@class")
_PARAGRAPH_TEXT = etree.XPath(".//p//text()", smart_strings=False)
_REMOVABLE_TAGS = _words(
    "div section aside nav ul ol li p span header footer form table h2 h3 h4 figure"
)
_LINKED_BLOCKS = etree.XPath(
    "//p[count(.//a) >= 2] | //ul[count(.//a) >= 3] | //ol[count(.//a) >= 3]"
)
_LINK_DENSITY = 0.65
_HEADING_LINKS = etree.XPath(
    "//h2[.//a] | //h3[.//a] | //h4[.//a] | //h5[.//a] | //a[.//h2 or .//h3 or .//h4 or .//h5]"
)
_TEASER_MAX_DEPTH = 4
_MIN_TEASERS = 3
_TEASER_SHARE = 0.8
_NEVER_TEASER = frozenset({"html", "body", "main", "article"})
_INVISIBLE = frozenset({"script", "style", "noscript", "template", "link", "meta"})
_SHORT_LABEL_WORDS = 5
_SHORT_LABEL_CHARS = 40
# a node holding more than this share of the page's paragraph text is content, whatever its name
_MAX_REMOVED_SHARE = 0.3

_LINE_PATTERNS = re.compile(
    r"""^(?:
        (?:click|tap)\ here\ to\ (?:subscribe|sign\ up|register|read\ (?:more|the\ full)
            |get\ (?:the\ )?(?:\w+\ ){0,3}app)\b
      | (?:sign\ up|subscribe)\b.{0,80}\b(?:newsletters?|inbox|channel|updates)\b
      | thanks?(?:\ you)?\ for\ (?:signing\ up|subscribing|reading)\b
      | (?:follow|like)\ (?:us|me)\ on\b
      | share\ (?:this|on)\b
      | (?:copyright\b|\(c\)\ ?\d{4}|©)
      | all\ rights\ reserved\b
      | explore\ further$
      | (?:read|see)\ (?:more|also)\b\s*:?$
      | (?:related|recommended)(?:\ (?:articles?|stories|posts|content|coverage|reading))?\s*:?$
      | (?:don'?t|do\ not)\ miss\b\s*:?$
      | (?:more\ from|you\ may\ also\ like|you\ might\ also\ like|trending\ now)\b
      | advertisement$
      | (?:order\ reprints|print\ (?:this\ )?article|email\ this\ article)$
      | (?:sorry!?|an?\ error\ (?:has\ )?occurred)\b.{0,60}$
      | there\ was\ an\ error\ processing\b
      | if\ you\ (?:enjoyed|liked)\ this\ (?:article|story|post)\b
      | this\ copy\ is\ for\ your\ personal,?\ non-commercial\ use\b
      | (?:comments?|\d+\ comments?)$
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_ANYWHERE_PATTERNS = re.compile(
    r"all rights reserved|for your personal,? non-commercial use|"
    r"we (?:may )?(?:earn|receive|get) (?:a )?(?:small )?(?:commission|share of)|"
    r"(?:may|might) (?:earn|get|receive) (?:a )?(?:share of the sale|commission)",
    re.IGNORECASE,
)
_MAX_FILTERED_LINE_WORDS = 40


def _paragraph_text_len(element: HtmlElement) -> int:
    return sum(map(len, _PARAGRAPH_TEXT(element)))


def _ancestors(element: HtmlElement, depth: int) -> list[HtmlElement]:
    chain, node = [], element.getparent()
    while node is not None and len(chain) < depth:
        chain.append(node)
        node = node.getparent()
    return chain


def merge_split_bodies(tree: HtmlElement) -> int:
    """Join containers that share a body-like class and sit close together (one article split
    into chunks around ads). Extractors pick a single container; without this the article
    stops at the first ad slot. Returns how many containers were merged away.
    """
    groups: dict[tuple[str, str], list[HtmlElement]] = {}
    hints: dict[str, bool] = {}
    for cls in _MERGE_CLASS_ATTRS(tree):
        hit = hints.get(cls)
        if hit is None:
            hit = hints[cls] = bool(_BODY_CLASS_HINT.search(cls) and not _COMMENT_HINT.search(cls))
        if hit:
            element = cls.getparent()
            groups.setdefault((element.tag, " ".join(cls.split())), []).append(element)
    merged = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        chunks = [m for m in members if _paragraph_text_len(m) >= _MIN_CHUNK_CHARS]
        if len(chunks) < 2:
            continue
        first = chunks[0]
        first_near = set(_ancestors(first, _MERGE_MAX_DEPTH))
        for other in chunks[1:]:
            near = _ancestors(other, _MERGE_MAX_DEPTH)
            if first in near or other in first_near or not first_near.intersection(near):
                continue  # nested in each other, or too far apart to be one article
            if other.text and other.text.strip():
                holder = first.makeelement("p", {})
                holder.text = other.text
                first.append(holder)
            for node in list(other):
                first.append(node)  # moves the node with its tail text
            other.getparent().remove(other)
            merged += 1
    return merged


def _link_density(element: HtmlElement, text_len: int) -> float:
    link_len = sum(len(a.text_content()) for a in element.iter("a"))
    return link_len / text_len if text_len else 0.0


def _is_short_label(element: HtmlElement | None) -> bool:
    """A heading-like line ("Related", "DON'T MISS"), not a sentence of the article."""
    if element is None or not isinstance(element.tag, str):
        return False
    if element.tag not in ("p", "h2", "h3", "h4", "h5", "h6", "strong", "b", "div", "span"):
        return False
    text = " ".join(element.text_content().split())
    return (
        0 < len(text.split()) <= _SHORT_LABEL_WORDS
        and len(text) <= _SHORT_LABEL_CHARS
        and not text.endswith((".", "。", "!", "?", "！", "？", '"', "”"))
    )


def _remove(element: HtmlElement) -> None:
    """Remove ``element`` but keep its tail text (it belongs to the parent)."""
    parent = element.getparent()
    if parent is None:
        return
    if element.tail and element.tail.strip():
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)


def _teaser_lists(root: HtmlElement, limit: float) -> list[HtmlElement]:
    """Containers whose items are (nearly) all headline links: "latest", "more from", related
    cards. Article prose never has three sibling blocks that each carry a linked heading."""
    items: dict[HtmlElement, set[HtmlElement]] = {}
    for heading in _HEADING_LINKS(root):
        child, parent = heading, heading.getparent()
        for _ in range(_TEASER_MAX_DEPTH):
            if parent is None:
                break
            items.setdefault(parent, set()).add(child)
            child, parent = parent, parent.getparent()
    found = []
    for parent, children in items.items():
        if len(children) < _MIN_TEASERS or parent.tag in _NEVER_TEASER:
            continue
        siblings = [c for c in parent if isinstance(c.tag, str) and c.tag not in _INVISIBLE]
        if len(children) >= _TEASER_SHARE * len(siblings) and _paragraph_text_len(parent) < limit:
            found.append(parent)
    return found


def remove_boilerplate(tree: HtmlElement) -> int:
    """Drop furniture nodes (by class/id vocabulary) and link lists; return how many."""
    body = tree.find(".//body")
    root = body if body is not None else tree
    total = _paragraph_text_len(root) or 1
    limit = total * _MAX_REMOVED_SHARE
    doomed: list[HtmlElement] = []
    named: dict[str, bool] = {}
    for value in _NAME_ATTRS(root):
        hit = named.get(value)
        if hit is None:
            hit = named[value] = bool(_BOILERPLATE_NAME.search(value.lower()))
        if not hit:
            continue
        element = value.getparent()
        if element.tag in _REMOVABLE_TAGS and _paragraph_text_len(element) < limit:
            doomed.append(element)
    for element in _LINKED_BLOCKS(root):
        text_len = len(element.text_content().strip())
        if not text_len or text_len >= limit:
            continue
        link_len = sum(len(a.text_content()) for a in element.iter("a"))
        if link_len / text_len >= _LINK_DENSITY:
            doomed.append(element)
    doomed.extend(_teaser_lists(root, limit))
    removed = 0
    for element in doomed:
        if element.getparent() is None:
            continue
        # a "Related" / "Don't miss" label right before a removed link block goes with it
        previous = element.getprevious()
        if _is_short_label(previous) and not (previous.tail or "").strip():
            _remove(previous)
            removed += 1
        _remove(element)
        removed += 1
    return removed


def is_boilerplate_line(line: str) -> bool:
    """True for short call-to-action / legal / widget lines that are never article prose."""
    stripped = line.strip().lstrip("-•*| ").strip()
    if not stripped:
        return False
    if len(stripped.split()) > _MAX_FILTERED_LINE_WORDS:
        return False
    return bool(_LINE_PATTERNS.match(stripped) or _ANYWHERE_PATTERNS.search(stripped))


def filter_lines(text: str) -> str:
    """Remove boilerplate lines and collapse the blank runs they leave."""
    kept = [line for line in text.split("\n") if not is_boilerplate_line(line)]
    out: list[str] = []
    for line in kept:
        if not line.strip() and (not out or not out[-1].strip()):
            continue
        out.append(line.rstrip())
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out)
