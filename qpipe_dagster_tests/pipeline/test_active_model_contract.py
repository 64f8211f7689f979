"""The active-model choice's contract, run on both backends: the local file and PostgreSQL.

The store is selected the way production selects it, through QPIPE_CONCEPTS_URL (a fresh
database per test on the throwaway cluster); `qpipe reembed` is the writer, so the switch is
checked through it: search moves only when every concept was re-embedded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import psycopg2
import pytest

from qpipe_dagster.cli import main as qpipe
from qpipe_dagster.concepts import (
    ActiveModelError,
    ActiveModelStore,
    ModelChoice,
    RegistryError,
    active_model_store,
)
from qpipe_dagster.defs.io import asset_storage_dir
from qpipe_dagster.embed.rotation import active_model, active_model_file, set_active_model
from qpipe_dagster.settings import SettingError
from qpipe_dagster_tests.pipeline.parsed_tables import store_parsed_pages
from qpipe_dagster_tests.postgres_cluster import (  # noqa: F401  (fixtures)
    postgres_cluster,
    postgres_url,
)

Opener = Callable[[], ActiveModelStore]
DEFAULT = ModelChoice("all-MiniLM-L6-v2")


@pytest.fixture(params=["file", "postgres"])
def open_store(
    request: pytest.FixtureRequest, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Opener:
    """Opens the store as every qpipe process does: active_model_store()."""
    for var in ("QPIPE_EMBED_MODEL", "QPIPE_EMBED_TRUNCATE_DIM"):
        monkeypatch.delenv(var, raising=False)
    if request.param == "postgres":
        monkeypatch.setenv("QPIPE_CONCEPTS_URL", request.getfixturevalue("postgres_url"))
    return active_model_store


def _is_postgres() -> bool:
    return bool(os.environ.get("QPIPE_CONCEPTS_URL"))


def test_none_until_recorded_then_replaced_whole(open_store: Opener, dagster_home: Path) -> None:
    store = open_store()
    assert store.get() is None and active_model() == DEFAULT
    set_active_model(ModelChoice("all-MiniLM-L6-v2", 256))
    assert open_store().get() == ModelChoice("all-MiniLM-L6-v2", 256)
    set_active_model(ModelChoice("/models/other"))  # the truncation goes with the old choice
    assert open_store().get() == ModelChoice("/models/other", None)
    assert active_model() == ModelChoice("/models/other", None)
    if _is_postgres():  # nothing on this host's disk: another host reads the same row
        assert not active_model_file().exists()
        assert "secret-not-needed" not in store.where and "qpipe_active_model" in store.where
    else:
        assert json.loads(active_model_file().read_text()) == {
            "name": "/models/other",
            "truncate_dim": None,
        }


def test_env_pins_still_win_with_the_same_messages(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_active_model(ModelChoice("all-MiniLM-L6-v2", 128))
    monkeypatch.setenv("QPIPE_EMBED_MODEL", "/models/pinned")
    assert active_model() == ModelChoice("/models/pinned", None)
    monkeypatch.delenv("QPIPE_EMBED_MODEL")
    monkeypatch.setenv("QPIPE_EMBED_TRUNCATE_DIM", "64")
    with pytest.raises(SettingError, match="QPIPE_EMBED_TRUNCATE_DIM=64 is set but"):
        active_model()


@pytest.mark.parametrize("bad", [ModelChoice(""), ModelChoice("m", 0), ModelChoice("m", -2)])
def test_a_bad_choice_is_refused_and_the_old_one_kept(open_store: Opener, bad: ModelChoice) -> None:
    set_active_model(ModelChoice("all-MiniLM-L6-v2", 128))
    with pytest.raises(ActiveModelError, match="cannot record the active model"):
        open_store().set(bad)
    assert open_store().get() == ModelChoice("all-MiniLM-L6-v2", 128)


def test_a_damaged_stored_choice_names_where_and_the_fix(open_store: Opener) -> None:
    store = open_store()
    if _is_postgres():
        conn = psycopg2.connect(os.environ["QPIPE_CONCEPTS_URL"])
        with conn, conn.cursor() as cur:  # what a hand edit or an older tool could leave
            cur.execute("INSERT INTO qpipe_active_model (name, truncate_dim) VALUES ('m', 0)")
        conn.close()
        where, fix = r"table qpipe_active_model at postgresql://", r"DELETE FROM qpipe_active_model"
    else:
        active_model_file().write_text("{not json")
        where, fix = re.escape(str(active_model_file())), "delete the file"
    for read in (store.get, active_model):
        with pytest.raises(ActiveModelError, match=where) as err:
            read()
        assert "qpipe reembed --model NAME" in str(err.value) and re.search(fix, str(err.value))
        assert "secret-not-needed" not in str(err.value)
    # the CLI says it in one line
    assert qpipe(["models"]) == 2


def test_local_file_of_an_older_qpipe_is_still_read(dagster_home: Path, monkeypatch) -> None:
    """A local install keeps its choice: the file is the local backend, in the same format."""
    monkeypatch.delenv("QPIPE_EMBED_MODEL", raising=False)
    (dagster_home / "qpipe").mkdir(exist_ok=True)
    (dagster_home / "qpipe" / "active_model.json").write_text(
        '{"name": "all-MiniLM-L6-v2", "truncate_dim": 256}'
    )
    assert active_model() == ModelChoice("all-MiniLM-L6-v2", 256)


def test_unreachable_postgres_names_the_setting(
    dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as s:  # bound, not listening: connections are refused
        s.bind(("127.0.0.1", 0))
        url = f"postgresql://qpipe:pw@127.0.0.1:{s.getsockname()[1]}/qpipe"
        monkeypatch.setenv("QPIPE_CONCEPTS_URL", url)
        with pytest.raises(RegistryError, match=r"qpipe_active_model .*QPIPE_CONCEPTS_URL"):
            active_model_store()


def test_failed_reembed_leaves_search_on_the_old_model(
    open_store: Opener, capsys: pytest.CaptureFixture[str]
) -> None:
    """One concept re-embedded, the next has no parsed_pages: the choice must not move."""
    store_parsed_pages(Path(asset_storage_dir()), "halving")
    set_active_model(DEFAULT)
    argv = ["reembed", "--model", "all-MiniLM-L6-v2", "--truncate-dim", "64"]
    assert qpipe([*argv, "--concept", "halving", "--concept", "missing"]) == 2
    captured = capsys.readouterr()
    assert "no parsed_pages stored for concept 'missing'" in captured.err
    assert "re-embedding: [1/2] halving (3 chunks)" in captured.err  # it got that far
    assert open_store().get() == DEFAULT

    # the same rotation whole: progress as plain lines (not a terminal), the report as JSON
    assert qpipe([*argv, "--concept", "halving", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["model"] == "all-MiniLM-L6-v2@64" and report["switched"] is True
    assert report["concepts"]["halving"]["embedded"] == 3
    assert re.search(r"re-embedding: \[1/1\] halving \(3 chunks\) \(.*s elapsed", captured.err)
    assert open_store().get() == ModelChoice("all-MiniLM-L6-v2", 64)
