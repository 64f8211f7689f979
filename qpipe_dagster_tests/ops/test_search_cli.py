"""`qpipe search` against a real LanceDB store and the real model: bad input named, nothing
created by a read, and a missing collection explained."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from qpipe_dagster.cli import main
from qpipe_dagster.embed.encoder import Encoder
from qpipe_dagster.store import open_store
from qpipe_dagster_tests.store.store_testdata import make_objects

VARS = ("QPIPE_EMBED_MODEL", "QPIPE_EMBED_TRUNCATE_DIM", "QPIPE_EMBED_DEVICE", "WEAVIATE_URL")


@pytest.fixture
def home(dagster_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in VARS:
        monkeypatch.delenv(var, raising=False)
    return dagster_home


def _fill(home: Path, concept: str, model: str = "all-MiniLM-L6-v2", dim: int = 384) -> None:
    encoder = Encoder()
    table = make_objects(concept, 4, dim, model=model)
    if dim == encoder.dim:
        vectors = encoder.encode(table.column("text").to_pylist()).ravel()
        table = table.set_column(
            10, "vector", pa.FixedSizeListArray.from_arrays(pa.array(vectors), dim)
        )
    store = open_store(model=model, dim=dim, lance_path=home / "qpipe" / "vectors")
    store.upsert(table)


def test_no_store_yet_is_said_and_nothing_is_created(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Old code: created an empty store (and table) and answered 'no results'."""
    assert main(["search", "halving"]) == 2
    assert "no local vector store at" in capsys.readouterr().err
    assert not (home / "qpipe" / "vectors").exists()


def test_collection_of_another_model_is_named(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old code: created an empty Chunks_..._256_d256 table and answered 'no results (has the
    concept been materialized?)' although the concept was stored - under another model."""
    _fill(home, "demo")
    monkeypatch.setenv("QPIPE_EMBED_MODEL", "all-MiniLM-L6-v2")
    monkeypatch.setenv("QPIPE_EMBED_TRUNCATE_DIM", "256")
    assert main(["search", "halving"]) == 2
    err = capsys.readouterr().err
    assert "has no collection 'Chunks_all_minilm_l6_v2_256_d256'" in err
    assert "collections present: Chunks_all_minilm_l6_v2_d384" in err
    assert not list((home / "qpipe" / "vectors").glob("*_d256*"))


def test_results_and_concept_filters(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(home, "demo")
    assert main(["search", "demo chunk 2", "-k", "1", "--json"]) == 0
    [hit] = json.loads(capsys.readouterr().out)
    assert hit["text"] == "demo chunk 2 v1" and hit["concept"] == "demo"
    assert main(["search", "halving", "--concept", "nosuch"]) == 0
    out = capsys.readouterr().out
    assert "no results: Chunks_all_minilm_l6_v2_d384 holds nothing for concept 'nosuch'" in out
    # where the backtest stores a concept's trials (README): old code refused the key
    assert main(["search", "halving", "--concept", "demo:trials"]) == 0
    assert "holds nothing for concept 'demo:trials'" in capsys.readouterr().out


@pytest.mark.parametrize("concept", ["", ":trials", "Demo", "demo:other"])
def test_bad_concept_filter_is_refused(
    home: Path, capsys: pytest.CaptureFixture[str], concept: str
) -> None:
    """Old code: --concept '' meant no filter at all and searched every concept."""
    _fill(home, "demo")
    assert main(["search", "demo chunk", "--concept", concept]) == 2
    assert "is not a valid concept key" in capsys.readouterr().err


def test_query_that_is_not_text_is_one_line(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What sys.argv holds for b'caf\\xe9' in a UTF-8 locale. Old code: a TypeError traceback
    from the tokenizer ('TextEncodeInput must be Union[...]')."""
    _fill(home, "demo")
    query = b"caf\xe9".decode("utf-8", "surrogateescape")
    assert main(["search", query]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qpipe: error: search query is not valid text") and "\\udce9" in err


def test_query_longer_than_the_model_reads_is_noted(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Old code: everything past the model's 256 tokens was dropped without a word."""
    _fill(home, "demo")
    assert main(["search", "word " * 1000, "-k", "1"]) == 0
    assert "the query is 1002 tokens; the model reads only the first 256" in capsys.readouterr().err
    assert main(["search", "word " * 10, "-k", "1"]) == 0
    assert "note" not in capsys.readouterr().err
