"""The concept message body: JSON validated against the shared schema, then as a Concept."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.protocols
import jsonschema.validators

from qpipe_dagster.concepts import Concept, ConceptError
from qpipe_dagster.paths import CONCEPT_MESSAGE_SCHEMA


class PayloadError(ValueError):
    """A body that can never be accepted (QStash must not retry it); the message says why."""


@dataclass(frozen=True)
class ConceptMessage:
    """A validated message: the raw fields plus the normalised Concept they describe."""

    concept: str
    urls: tuple[str, ...]
    symbol: str | None
    normalized: Concept
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.normalized.slug


# The schema as this module's fast path knows it. The fast path is only used while the shared
# schema file is exactly this; any edit to the file silently falls back to jsonschema alone.
_FAST_PATH_SCHEMA = {
    "type": "object",
    "required": ["concept"],
    "properties": {
        "concept": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "pattern": "[A-Za-z0-9]",
            "not": {"pattern": "[\\u0000-\\u001f\\u007f-\\u009f]"},
            "description": (
                "A letter or digit somewhere; no control characters (Unicode category Cc)."
            ),
        },
        "urls": {
            "type": "array",
            "maxItems": 100,
            "items": {"type": "string", "maxLength": 2048, "pattern": "^https?://[^\\s]+$"},
        },
        "symbol": {
            "type": ["string", "null"],
            "pattern": "^[A-Za-z0-9]{1,15}([-/][A-Za-z0-9]{1,15})?$",
        },
    },
    "additionalProperties": True,
}
_CONCEPT_RE = re.compile(r"[A-Za-z0-9]")
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
_URL_RE = re.compile(r"^https?://[^\s]+$")
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9]{1,15}([-/][A-Za-z0-9]{1,15})?$")


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(_schema())
    cls.check_schema(_schema())
    return cls(_schema())


@lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads(CONCEPT_MESSAGE_SCHEMA.read_text("utf-8"))


@lru_cache(maxsize=1)
def fast_path_enabled() -> bool:
    schema = {k: v for k, v in _schema().items() if k in _FAST_PATH_SCHEMA}
    return schema == _FAST_PATH_SCHEMA


def surely_valid(data: dict) -> bool:
    """A hand-written check (~1 us vs ~50 us for jsonschema) that answers True only for
    messages the schema accepts; anything else goes to jsonschema for the verdict and message."""
    concept = data.get("concept")
    if type(concept) is not str or not 1 <= len(concept) <= 200 or not _CONCEPT_RE.search(concept):
        return False
    if _CONTROL_RE.search(concept):
        return False
    if "urls" in data:
        urls = data["urls"]
        if type(urls) is not list or len(urls) > 100:
            return False
        for url in urls:
            if type(url) is not str or len(url) > 2048 or not _URL_RE.search(url):
                return False
    if "symbol" in data:
        symbol = data["symbol"]
        if symbol is not None and (type(symbol) is not str or not _SYMBOL_RE.search(symbol)):
            return False
    return True


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


# Built once: `json.loads(..., parse_constant=...)` would build a new decoder for every body.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_MAX_DETAIL = 300  # jsonschema quotes the whole offending value, which may be ~1 MiB


def _clip(text: str) -> str:
    """A rejection detail short enough for a response body and one log line."""
    if len(text) <= _MAX_DETAIL:
        return text
    return f"{text[:_MAX_DETAIL]}… ({len(text) - _MAX_DETAIL} more characters)"


def _json_problem(text: str, exc: ValueError) -> str:
    """Why `text` did not decode, in the sender's terms rather than the parser's advice."""
    if text.startswith("\ufeff"):
        return "body starts with a byte-order mark (U+FEFF); send UTF-8 JSON without one"
    if "integer string conversion" in str(exc):  # int()'s limit, not a JSON syntax error
        return (
            f"body is not valid JSON for this receiver: a number has more than"
            f" {sys.get_int_max_str_digits()} digits"
        )
    return _clip(f"body is not valid JSON: {exc}")


def parse_concept_message(raw: bytes) -> ConceptMessage:
    """Decode, schema-check and normalise a message body; PayloadError names the first problem."""
    if not raw or not raw.strip():
        raise PayloadError('body is empty; expected a JSON object like {"concept": "..."}')
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not UTF-8 (bad byte at offset {exc.start})") from None
    try:
        data = _DECODER.decode(text)
    except ValueError as exc:
        raise PayloadError(_json_problem(text, exc)) from None
    except RecursionError:  # was an unhandled 500, so QStash retried it for ever
        raise PayloadError("body is not valid JSON for this receiver: nested too deeply") from None
    if not isinstance(data, dict):
        raise PayloadError(f"body must be a JSON object, got {type(data).__name__}")
    if not (fast_path_enabled() and surely_valid(data)):
        try:
            error = jsonschema.exceptions.best_match(_validator().iter_errors(data))
            message = None if error is None else error.message  # repr of the value: may recurse
        except RecursionError:
            raise PayloadError("a field of the message is nested too deeply") from None
    else:
        error = message = None
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        if where == "concept" and error.validator == "not":  # jsonschema's words are opaque here
            raise PayloadError(
                "concept: contains control characters (U+0000-U+001F, U+007F-U+009F)"
            )
        raise PayloadError(_clip(f"{where}: {message}"))
    urls = tuple(data.get("urls") or ())
    symbol = data.get("symbol")
    try:
        concept = Concept.create(data["concept"], urls, symbol)
    except ConceptError as exc:
        raise PayloadError(_clip(str(exc))) from None
    extra = {k: v for k, v in data.items() if k not in ("concept", "urls", "symbol")}
    return ConceptMessage(data["concept"], urls, symbol, concept, extra)
