"""Contract between edge/ (the Cloudflare Worker) and the receiver.

The worker's test suite proves that edge/test/fixtures/published_*.json are byte-for-byte the
bodies it publishes to QStash; here the Python side proves it accepts exactly those bodies,
both against the shared JSON Schema and through the receiver's own parser.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "qpipe_dagster" / "schemas" / "concept_message.schema.json"
FIXTURES = sorted((REPO / "edge" / "test" / "fixtures").glob("published_*.json"))


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text("utf-8"))


def _as_worker_sends(body: dict[str, Any]) -> bytes:
    """The worker sends JSON.stringify output: compact, UTF-8, non-ASCII unescaped."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text("utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_fixtures_cover_the_interesting_shapes() -> None:
    names = {p.name for p in FIXTURES}
    assert {
        "published_with_symbol.json",
        "published_without_symbol.json",
        "published_limits.json",
    } <= names
    limits = _load(FIXTURES[[p.name for p in FIXTURES].index("published_limits.json")])
    assert len(limits["concept"]) == 200 and len(limits["urls"]) == 100


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_published_body_matches_schema(path: Path, validator: jsonschema.Validator) -> None:
    body = _load(path)
    errors = [e.message for e in validator.iter_errors(body)]
    assert errors == [], f"{path.name}: {errors}"
    assert set(body) == {"concept", "urls", "symbol"}


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.update(concept=""),
        lambda b: b.update(concept="x" * 201),
        lambda b: b.update(urls=["file:///etc/passwd"]),
        lambda b: b.update(urls=b["urls"] * 101),
        lambda b: b.update(symbol="NOT A SYMBOL"),
        lambda b: b.pop("concept"),
        lambda b: b.update(concept="momentum\u0007bell"),
        lambda b: b.update(concept="line\nbreak"),
        lambda b: b.update(concept="c1 control \u0085"),
    ],
    ids=["empty-concept", "long-concept", "file-url", "101-urls", "bad-symbol", "no-concept",
         "bell-in-concept", "newline-in-concept", "c1-control-in-concept"],  # fmt: skip
)
def test_schema_rejects_broken_bodies(mutate, validator: jsonschema.Validator) -> None:
    body = copy.deepcopy(_load(FIXTURES[0]))
    mutate(body)
    assert list(validator.iter_errors(body)), "the schema must reject this body"


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_receiver_parses_published_body(path: Path) -> None:
    payload = pytest.importorskip("webhook_sensor.payload")
    body = _load(path)
    for raw in (_as_worker_sends(body), path.read_bytes()):
        message = payload.parse_concept_message(raw)
        assert message.concept == body["concept"]
        assert list(message.urls) == body["urls"]
        assert message.symbol == body["symbol"]
        expected_symbol = body["symbol"].upper() if body["symbol"] else None
        assert message.normalized.symbol == expected_symbol
        assert list(message.normalized.seed_urls) == body["urls"]
        assert message.extra == {}


def test_receiver_refuses_a_broken_body() -> None:
    payload = pytest.importorskip("webhook_sensor.payload")
    body = _load(FIXTURES[0])
    body["urls"] = ["javascript:alert(1)"]
    with pytest.raises(payload.PayloadError, match="urls"):
        payload.parse_concept_message(_as_worker_sends(body))
