"""Model rotation settings and the CLI's refusals (the full rotation runs in test_end_to_end)."""

from pathlib import Path

import pytest

from qpipe_dagster.cli import main as qpipe
from qpipe_dagster.embed.rotation import (
    ModelChoice,
    active_model,
    active_model_file,
    set_active_model,
)


def test_default_then_persisted_then_env_pin(dagster_home: Path, monkeypatch) -> None:
    monkeypatch.delenv("QPIPE_EMBED_MODEL", raising=False)
    assert active_model() == ModelChoice("all-MiniLM-L6-v2", None)
    set_active_model(ModelChoice("all-MiniLM-L6-v2", 256))
    assert active_model() == ModelChoice("all-MiniLM-L6-v2", 256)
    monkeypatch.setenv("QPIPE_EMBED_MODEL", "/models/other")
    assert active_model() == ModelChoice("/models/other", None)


def test_corrupt_choice_names_the_file(dagster_home: Path, monkeypatch) -> None:
    monkeypatch.delenv("QPIPE_EMBED_MODEL", raising=False)
    active_model_file().write_text("{not json")
    with pytest.raises(ValueError, match=r"active_model.json"):
        active_model()


def test_reembed_refuses_when_nothing_is_stored(dagster_home: Path, capsys) -> None:
    assert qpipe(["reembed", "--model", "all-MiniLM-L6-v2", "--truncate-dim", "128"]) == 2
    assert "nothing to re-embed" in capsys.readouterr().err
    assert qpipe(["reembed", "--model", "all-MiniLM-L6-v2", "--truncate-dim", "0"]) == 2
    assert "--truncate-dim" in capsys.readouterr().err


@pytest.mark.parametrize("concept", ["../x", "", "Demo"])
def test_reembed_concept_must_be_a_key(dagster_home: Path, capsys, concept: str) -> None:
    """Old code joined --concept onto the parsed_pages folder: '../x' read the table stored at
    assets/x (and died with KeyError 'chunks'), '' read parsed_pages itself."""
    import pyarrow as pa

    from qpipe_dagster.defs.io import asset_storage_dir
    from qpipe_dagster.storage.arrow_files import write_table

    write_table(pa.table({"a": [1]}), asset_storage_dir() / "x")
    assert qpipe(["reembed", "--model", "all-MiniLM-L6-v2", "--concept", concept]) == 2
    assert "is not a valid concept key" in capsys.readouterr().err
