"""A concept and its rules: name, slug (the partition key), seed URLs and market symbol.

What every registry backend stores and refuses; no Dagster imports here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from qpipe_dagster.settings import market_symbol

MAX_NAME_CHARS = 200
MAX_SLUG_CHARS = 64
MAX_SEED_URLS = 100
_SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
# Unicode category Cc is exactly these 65 code points (a stability policy of the standard).
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
_NON_ALNUM_RE = re.compile(r"[^a-z0-9]+")
_WHITESPACE_RE = re.compile(r"\s")  # for str patterns, what str.isspace() calls whitespace
# WHATWG's forbidden host code points (space, controls, delimiters, '%') and empty labels.
_BAD_HOST_RE = re.compile(r"[\s\x00-\x1f\x7f#/:<>?@\[\\\]^|%\"]|\.\.|^\.")
# JSON's "\ud800" escapes decode to lone surrogates: not text, and no UTF-8 store can hold them.
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(text: str) -> bool:
    """True if `text` holds an unpaired UTF-16 surrogate (what a lone JSON "\\ud800" escape or
    os.fsdecode of bad bytes gives): not Unicode text, and no UTF-8 store can hold it."""
    return not text.isascii() and _SURROGATE_RE.search(text) is not None


class ConceptError(ValueError):
    """A concept name, URL or symbol that cannot be accepted; the message says which and why."""


class RegistryError(ValueError):
    """The registry file cannot be used (not SQLite, another table layout, a damaged row);
    the message names the file. Not a ConceptError: the concept asked for may be fine."""


def _cut_apart(a: str, b: str) -> bool:
    """True if names `a` and `b` share a slug only because it was cut to MAX_SLUG_CHARS."""
    try:
        full_a, full_b = slugify(a, cut=False), slugify(b, cut=False)
    except ConceptError:  # a name registered under older rules: nothing to compare
        return False
    return full_a != full_b and max(len(full_a), len(full_b)) > MAX_SLUG_CHARS


def slugify(name: str, *, cut: bool = True) -> str:
    """Turn a free-form concept name into its partition key ("Bitcoin Halving!" -> "bitcoin-halving").

    `cut=False` keeps keys longer than MAX_SLUG_CHARS whole (to tell long names apart).
    """
    if not isinstance(name, str):
        raise ConceptError(f"concept name must be a string, got {type(name).__name__}")
    if not name.strip():
        raise ConceptError("concept name is empty")
    if len(name) > MAX_NAME_CHARS:
        raise ConceptError(f"concept name is {len(name)} characters; the limit is {MAX_NAME_CHARS}")
    if _CONTROL_RE.search(name):
        raise ConceptError(f"concept name {name!r} contains control characters")
    if name.isascii():  # NFKD leaves ASCII as it is; skip the round trip (receiver hot path)
        ascii_name = name
    else:
        if has_lone_surrogate(name):
            raise ConceptError(
                f"concept name {name!r} contains an unpaired UTF-16 surrogate (e.g. a lone"
                " \\ud800 escape in JSON): not valid Unicode text"
            )
        ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = _NON_ALNUM_RE.sub("-", ascii_name.lower()).strip("-")
    if not slug:
        raise ConceptError(f"concept name {name!r} has no letters or digits to make a key from")
    if cut and len(slug) > MAX_SLUG_CHARS:
        slug = slug[:MAX_SLUG_CHARS].rstrip("-")
    return slug


def validate_slug(slug: str) -> str:
    """Check a partition key that should already be a slug (e.g. typed into the UI)."""
    if not isinstance(slug, str) or not _SLUG_RE.match(slug) or len(slug) > MAX_SLUG_CHARS:
        raise ConceptError(
            f"{slug!r} is not a valid concept key: use lower-case letters, digits and single "
            f"hyphens, at most {MAX_SLUG_CHARS} characters (e.g. 'bitcoin-halving-momentum')"
        )
    return slug


def host_fault(host: str) -> str | None:
    """Why a host name (as `urlsplit(...).hostname` gives it) cannot be crawled, or None.

    Shared by concept validation and the crawler, so a seed accepted here is one it can fetch.
    IPv6 literals (they contain ':') are left to the URL parser.
    """
    if ":" not in host and _BAD_HOST_RE.search(host):
        return f"invalid host name {host!r} (spaces, reserved characters or empty labels)"
    return None


def validate_url(url: str) -> str:
    """Accept absolute http(s) URLs only; anything else is a clear error naming the URL."""
    if not isinstance(url, str) or not url.strip():
        raise ConceptError("seed URL is empty")
    url = url.strip()
    try:
        parts = urlsplit(url)  # raises for a malformed [IPv6] host
    except ValueError as exc:
        raise ConceptError(f"seed URL {url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ConceptError(f"seed URL {url!r} must start with http:// or https://")
    if not parts.hostname:
        raise ConceptError(f"seed URL {url!r} has no host")
    if _WHITESPACE_RE.search(url):
        raise ConceptError(f"seed URL {url!r} contains whitespace")
    # Raw control characters are never part of a URL (they are sent %-encoded), and a NUL
    # cannot be stored in PostgreSQL's JSONB; isprintable() is the quick test for the usual case.
    if not url.isprintable() and _CONTROL_RE.search(url):
        raise ConceptError(f"seed URL {url!r} contains control characters")
    if has_lone_surrogate(url):
        raise ConceptError(f"seed URL {url!r} contains an unpaired UTF-16 surrogate")
    if parts.username is not None or parts.password is not None:
        raise ConceptError(f"seed URL {url!r} embeds credentials (user:password@); not crawled")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ConceptError(f"seed URL {url!r} has an invalid port (use 1-65535)")
    fault = host_fault(parts.hostname)
    if fault:
        raise ConceptError(f"seed URL {url!r}: {fault}")
    return url


def normalize_symbol(symbol: str | None) -> str | None:
    """Upper-case a market symbol such as 'btc-usd'; None stays None."""
    if symbol is None or (isinstance(symbol, str) and not symbol.strip()):
        return None
    try:
        return market_symbol(symbol)
    except ValueError:
        raise ConceptError(
            f"market symbol {symbol!r} is not valid: use letters and digits with an optional "
            "'-' or '/' between base and quote, e.g. BTC-USD"
        ) from None


@dataclass(frozen=True)
class Concept:
    """One concept: its partition key, display name, seed URLs and optional market symbol."""

    slug: str
    name: str
    seed_urls: tuple[str, ...] = field(default_factory=tuple)
    symbol: str | None = None

    @classmethod
    def create(cls, name: str, seed_urls: Iterable[str] = (), symbol: str | None = None) -> Concept:
        """Validate everything up front so a bad concept never reaches the pipeline."""
        urls = tuple(dict.fromkeys(validate_url(u) for u in seed_urls))
        if len(urls) > MAX_SEED_URLS:
            raise ConceptError(f"{len(urls)} seed URLs given; the limit is {MAX_SEED_URLS}")
        return cls(
            slug=slugify(name), name=name.strip(), seed_urls=urls, symbol=normalize_symbol(symbol)
        )

    def merged_with(self, other: Concept) -> Concept:
        """Union of seed URLs (ours first); the newer symbol wins when given."""
        urls = tuple(dict.fromkeys((*self.seed_urls, *other.seed_urls)))
        return Concept(self.slug, self.name, urls, other.symbol or self.symbol)


def merge_for_upsert(existing: Concept | None, concept: Concept) -> Concept:
    """What an upsert of `concept` stores over `existing` (both registry backends use it).

    Names longer than a slug holds are cut to the same slug when they agree on their first
    64 key characters: merging those would silently make two concepts one, so it is refused.
    """
    if existing and _cut_apart(existing.name, concept.name):
        raise ConceptError(
            f"concept name {concept.name!r} makes the key {concept.slug!r}, already registered"
            f" for the different name {existing.name!r} (keys keep the first {MAX_SLUG_CHARS}"
            " characters): use a name that differs within them"
        )
    return existing.merged_with(concept) if existing else concept
