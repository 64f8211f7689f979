"""Turn raw HTTP bodies into text, following the order browsers use to pick a charset.

Order: byte-order mark, BOM-less UTF-16 (a NUL in every other byte), valid multi-byte UTF-8, the
charset the HTTP header declared, a ``<meta>`` declaration near the start, UTF-8 with a few stray
windows-1252 bytes, then statistical detection (charset-normalizer). A declaration is only
trusted if the bytes mostly decode under it, because servers often lie. Decoding never raises:
undecodable bytes become U+FFFD.
"""

from __future__ import annotations

import codecs
import re

import charset_normalizer

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: shares its first two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# WHATWG Encoding Standard: labels browsers treat as a superset encoding. Decoding with the
# superset is what the page author saw, e.g. "iso-8859-1" pages routinely contain cp1252 quotes.
_ALIASES: dict[str, str] = {
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "l1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "iso-8859-9": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "x-mac-roman": "mac-roman",
    "utf8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
}

_META_SNIFF_BYTES = 8192
_DETECT_BYTES = 65536
# A declared charset is accepted when at most this share of bytes fails to decode under it
# (a few stray garbage bytes in an otherwise correct page must not trigger re-detection).
_MAX_ERROR_SHARE = 0.002

_WIDE_SNIFF_BYTES = 4096
_WIDE_MIN_NUL_SHARE = 0.3
_WIDE_MAX_OTHER_SHARE = 0.05
# stray bytes in UTF-8 are accepted when valid multi-byte characters outnumber them this much
_MIN_UTF8_SHARE = 2
_ESCAPED = re.compile(r"[\udc80-\udcff]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")

_META_CHARSET = re.compile(
    rb"""<meta\b[^>]*?\bcharset\s*=\s*["']?\s*([a-zA-Z0-9_:.+-]+)""", re.IGNORECASE
)


def normalize_encoding(label: str | None) -> str | None:
    """Return a Python codec name for a charset label, or None if it is unknown/unsupported."""
    if not label:
        return None
    cleaned = label.strip().strip("\"'").strip().lower()
    if not cleaned:
        return None
    cleaned = _ALIASES.get(cleaned, cleaned)
    try:
        name = codecs.lookup(cleaned).name
    except LookupError:
        return None
    # Python's "latin-1" is ISO-8859-1 proper; browsers decode it as windows-1252.
    return _ALIASES.get(name, name)


def sniff_meta_charset(body: bytes) -> str | None:
    """Charset from ``<meta charset>`` or ``<meta http-equiv content="...; charset=...">``."""
    match = _META_CHARSET.search(body[:_META_SNIFF_BYTES])
    if not match:
        return None
    name = normalize_encoding(match.group(1).decode("ascii", "ignore"))
    # A meta tag we could read as ASCII cannot really be UTF-16/32 (WHATWG rule: use UTF-8).
    if name and name.startswith(("utf-16", "utf-32", "utf_16", "utf_32")):
        return "utf-8"
    return name


def _bom_encoding(body: bytes) -> tuple[str, int] | None:
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name, len(bom)
    return None


def _decode_if_plausible(body: bytes, encoding: str) -> str | None:
    """Decode with replacement if only a tiny share of the bytes is invalid, else None."""
    try:
        return body.decode(encoding)
    except UnicodeDecodeError:
        pass
    except LookupError:
        return None
    text = body.decode(encoding, errors="replace")
    errors = text.count("\ufffd")
    return text if errors <= max(4, len(body) * _MAX_ERROR_SHARE) else None


def _detect(body: bytes) -> str | None:
    best = charset_normalizer.from_bytes(body[:_DETECT_BYTES]).best()
    return normalize_encoding(best.encoding) if best is not None else None


def sniff_utf16(body: bytes) -> str | None:
    """``utf-16-le``/``-be`` for BOM-less UTF-16 markup: ASCII tags and attributes put a NUL
    in every other byte, which no 8-bit encoding of HTML does."""
    sample = body[:_WIDE_SNIFF_BYTES]
    half = len(sample) // 2
    if half < 8 or b"\0" not in sample:
        return None
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    if odd >= half * _WIDE_MIN_NUL_SHARE and even <= half * _WIDE_MAX_OTHER_SHARE:
        return "utf-16-le"
    if even >= half * _WIDE_MIN_NUL_SHARE and odd <= half * _WIDE_MAX_OTHER_SHARE:
        return "utf-16-be"
    return None


def _is_wide(name: str) -> bool:
    return name.startswith(("utf-16", "utf-32", "utf_16", "utf_32"))


def _mostly_utf8(body: bytes) -> str | None:
    """UTF-8 with a few stray bytes of another encoding (a page pieced together from sources):
    the stray bytes are read as windows-1252, the usual culprit. None if UTF-8 is unlikely."""
    text = body.decode("utf-8", errors="surrogateescape")
    stray = len(_ESCAPED.findall(text))
    multibyte = len(_NON_ASCII.findall(text)) - stray
    if multibyte < _MIN_UTF8_SHARE * stray:
        return None
    return _ESCAPED.sub(
        lambda m: bytes([ord(m.group()) - 0xDC00]).decode("cp1252", "replace"), text
    )


def decode_html(body: bytes, declared_encoding: str | None = None) -> str:
    """Decode an HTML body: BOM, UTF-16/UTF-8 checks, HTTP charset, ``<meta>``, detection.

    Never raises on bad bytes (they become U+FFFD). A declared charset under which the bytes do
    not decode is ignored in favour of the next source, as browsers effectively do; so is a
    declared single-byte or UTF-16 charset when the bytes are plainly UTF-8 (a common server
    misconfiguration: ``charset=iso-8859-1`` on UTF-8 pages).
    """
    if not body:
        return ""
    bom = _bom_encoding(body)
    if bom is not None:
        name, skip = bom
        return body[skip:].decode(name, errors="replace")
    wide = sniff_utf16(body)
    if wide is not None:
        return body.decode(wide, errors="replace")

    ascii_only = body.isascii()
    if not ascii_only:
        # Valid multi-byte UTF-8 is almost never an accident, whatever the server declared.
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            pass

    candidates: list[str] = []
    for name in (normalize_encoding(declared_encoding), sniff_meta_charset(body)):
        # the bytes are not UTF-16 (sniffed above): such a label is a server's mistake
        if name and name not in candidates and not _is_wide(name):
            candidates.append(name)
    for name in candidates:
        text = _decode_if_plausible(body, name)
        if text is not None:
            return text
    if ascii_only:
        return body.decode("ascii")
    mixed = _mostly_utf8(body)
    if mixed is not None:
        return mixed
    detected = _detect(body)
    if detected:
        return body.decode(detected, errors="replace")
    fallback = candidates[0] if candidates else "utf-8"
    return body.decode(fallback, errors="replace")
