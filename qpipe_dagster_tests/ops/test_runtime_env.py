"""Environment variables as the code location and the CLI read them at run time.

Blank means unset (as in the start-up check), and a value that cannot be used is one error
naming the variable, never a traceback or a message about something else.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from qpipe_dagster.cli import main
from qpipe_dagster.defs.resources import DEMO_PRICES_DIR, default_resources
from qpipe_dagster.embed.rotation import ModelChoice, active_model, active_model_file
from qpipe_dagster.ops.env import env_problems
from qpipe_dagster.settings import SettingError
from qpipe_dagster.store import VectorStoreError, open_store

VARS = (
    "QPIPE_EMBED_MODEL",
    "QPIPE_EMBED_TRUNCATE_DIM",
    "QPIPE_EMBED_DEVICE",
    "WEAVIATE_URL",
    "WEAVIATE_API_KEY",
    "WEAVIATE_GRPC_PORT",
    "QPIPE_LANCE_PATH",
    "QPIPE_PRICES_DIR",
    "QPIPE_DEFAULT_SYMBOL",
)


@pytest.fixture
def env(dagster_home: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_blank_variables_mean_unset(env: pytest.MonkeyPatch) -> None:
    """Old code: QPIPE_EMBED_DEVICE='' failed to load ('embedding device '' is not one of...'),
    WEAVIATE_URL='  ' tried to connect to a host named '  ', and QPIPE_EMBED_MODEL='  ' failed
    with 'embedding model name is empty' - while the start-up check passed all three."""
    for var in VARS:
        env.setenv(var, "  ")
    assert env_problems("local") == []
    resources = default_resources()
    assert resources["embedder"].device == "auto"
    assert resources["embedder"].model_name == "all-MiniLM-L6-v2"
    assert resources["vector_store"].weaviate_url is None
    assert resources["vector_store"].lance_path is None
    # old code: prices from a folder named '  ', and a symbol of '  ' that no file matches
    assert resources["prices"].prices_dir == str(DEMO_PRICES_DIR)
    assert resources["prices"].default_symbol == "BTC-USD"


def test_default_symbol_is_normalised_and_checked(env: pytest.MonkeyPatch) -> None:
    env.setenv("QPIPE_DEFAULT_SYMBOL", " eth-usd ")
    assert env_problems("local") == []
    assert default_resources()["prices"].default_symbol == "ETH-USD"
    env.setenv("QPIPE_DEFAULT_SYMBOL", "ETH USD")
    with pytest.raises(SettingError, match=r"QPIPE_DEFAULT_SYMBOL='ETH USD' is invalid"):
        default_resources()
    assert env_problems("local")  # the start-up check refuses the same value


def test_device_is_normalised_like_the_startup_check(env: pytest.MonkeyPatch) -> None:
    env.setenv("QPIPE_EMBED_DEVICE", " CPU ")
    assert env_problems("local") == []
    assert default_resources()["embedder"].device == "cpu"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"QPIPE_EMBED_DEVICE": "gpu"}, r"QPIPE_EMBED_DEVICE='gpu' is invalid"),
        ({"QPIPE_EMBED_DEVICE": "cuda:x"}, r"QPIPE_EMBED_DEVICE='cuda:x' is invalid"),
        (
            {"QPIPE_EMBED_MODEL": "all-MiniLM-L6-v2", "QPIPE_EMBED_TRUNCATE_DIM": "abc"},
            r"QPIPE_EMBED_TRUNCATE_DIM='abc' is invalid: must be a whole number from 1",
        ),
        (
            {"QPIPE_EMBED_MODEL": "all-MiniLM-L6-v2", "QPIPE_EMBED_TRUNCATE_DIM": "1e999"},
            r"QPIPE_EMBED_TRUNCATE_DIM='1e999' is invalid",
        ),
        (
            {"QPIPE_EMBED_MODEL": "all-MiniLM-L6-v2", "QPIPE_EMBED_TRUNCATE_DIM": "-1"},
            r"QPIPE_EMBED_TRUNCATE_DIM='-1' is invalid",
        ),
        (
            {"QPIPE_EMBED_MODEL": "all-MiniLM-L6-v2", "QPIPE_EMBED_TRUNCATE_DIM": "0"},
            r"QPIPE_EMBED_TRUNCATE_DIM='0' is invalid",
        ),
        # old code: silently ignored, so the store got 384-dim vectors instead of 128
        (
            {"QPIPE_EMBED_TRUNCATE_DIM": "128"},
            "QPIPE_EMBED_TRUNCATE_DIM=128 is set but QPIPE_EMBED_MODEL is not",
        ),
    ],
)
def test_invalid_values_fail_loading_naming_the_variable(
    env: pytest.MonkeyPatch, values: dict[str, str], message: str
) -> None:
    for name, value in values.items():
        env.setenv(name, value)
    with pytest.raises(SettingError, match=message):
        default_resources()
    assert env_problems("local")  # the start-up check refuses the same values


def test_pinned_model_and_truncation(env: pytest.MonkeyPatch) -> None:
    env.setenv("QPIPE_EMBED_MODEL", " all-MiniLM-L6-v2 ")
    env.setenv("QPIPE_EMBED_TRUNCATE_DIM", " 256 ")
    assert active_model() == ModelChoice("all-MiniLM-L6-v2", 256)


@pytest.mark.parametrize("dim", ["abc", 0, -3, 2.5, True])
def test_bad_truncation_in_the_active_model_file_names_the_file(
    env: pytest.MonkeyPatch, dim: object
) -> None:
    """Old code: {"truncate_dim": "abc"} reached the encoder and died comparing str < int."""
    active_model_file().write_text(json.dumps({"name": "all-MiniLM-L6-v2", "truncate_dim": dim}))
    with pytest.raises(ValueError, match=r"active_model.json is not a valid model choice"):
        active_model()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("port", ["abc", "0", "70000", "-1"])
def test_bad_weaviate_grpc_port_is_named_before_connecting(
    env: pytest.MonkeyPatch, port: str
) -> None:
    """Old code: "invalid literal for int() with base 10: 'abc'" - no variable named."""
    env.setenv("WEAVIATE_GRPC_PORT", port)
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(VectorStoreError, match=rf"WEAVIATE_GRPC_PORT='{port}' is invalid"):
        open_store(model="m", dim=8, weaviate_url=url)
    assert any(p.startswith("WEAVIATE_GRPC_PORT=") for p in env_problems("local"))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("weaviate:8080", "must start with http:// or https://"),
        ("localhost", "must start with http:// or https://"),
        ("http://", "not an http"),
        ("http://wea viate:8080", "not an http"),
        ("http://weaviate:abc", "invalid port"),
        ("http://weaviate:99999", "invalid port"),
    ],
)
def test_weaviate_url_rule_is_the_same_at_startup_and_at_connect(
    env: pytest.MonkeyPatch, url: str, message: str
) -> None:
    """Old code: 'weaviate:8080' failed the start-up check yet the store connected to it (as
    http://weaviate:8080); 'http://weaviate:abc' passed the check and then raised a bare
    ValueError from urllib."""
    with pytest.raises(VectorStoreError, match=message):
        open_store(model="m", dim=8, weaviate_url=url)
    env.setenv("WEAVIATE_URL", url)
    assert any(p.startswith("WEAVIATE_URL=") for p in env_problems("local"))


def test_cli_prints_one_line_for_a_bad_variable(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Old code: EmbeddingError / VectorStoreError escaped `qpipe search` as tracebacks."""
    env.setenv("QPIPE_EMBED_DEVICE", "gpu")
    assert main(["search", "halving"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("qpipe: error: QPIPE_EMBED_DEVICE='gpu' is invalid")
        and "Traceback" not in err
    )


def test_cli_names_dagster_home_that_is_a_file(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Old code: NotADirectoryError traceback from mkdir, DAGSTER_HOME not mentioned."""
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    env.setenv("DAGSTER_HOME", str(home))
    assert main(["search", "halving"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qpipe: error: DAGSTER_HOME={str(home)!r}") and "directory" in err


def test_cli_names_a_lance_path_that_is_a_file(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "vectors"
    path.write_text("")
    env.setenv("QPIPE_LANCE_PATH", str(path))
    assert main(["search", "halving"]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
