"""Two hosts, one PostgreSQL: the model `qpipe reembed` activates on one is the model the other
searches with and `qpipe doctor` reports there.

Each host is its own OS process with its own DAGSTER_HOME (nothing on disk is shared) and the
same QPIPE_CONCEPTS_URL. Host A re-embeds on a real terminal, so its progress is the bar.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from qpipe_dagster.paths import state_paths
from qpipe_dagster_tests.cli.terminal import run_on_terminal
from qpipe_dagster_tests.pipeline.parsed_tables import store_parsed_pages
from qpipe_dagster_tests.postgres_cluster import (  # noqa: F401  (fixtures)
    postgres_cluster,
    postgres_url,
)

REPO = Path(__file__).resolve().parents[2]
QPIPE = [sys.executable, "-m", "qpipe_dagster.cli"]


def _host(tmp_path: Path, name: str, url: str) -> dict[str, str]:
    """The environment of one host: its own DAGSTER_HOME, the shared registry database."""
    home = tmp_path / name
    (home / "qpipe").mkdir(parents=True)
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QPIPE_", "WEAVIATE_"))}
    env.pop("DAGSTER_PG_HOST", None)
    return {**env, "DAGSTER_HOME": str(home), "QPIPE_CONCEPTS_URL": url, "PYTHONPATH": str(REPO)}


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QPIPE, *argv], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_reembed_on_one_host_switches_search_and_doctor_on_the_other(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811  (the fixture imported above)
) -> None:
    a, b = _host(tmp_path, "host-a", postgres_url), _host(tmp_path, "host-b", postgres_url)
    assets_a = state_paths(a).assets
    for concept in ("halving", "merge"):
        store_parsed_pages(assets_a, concept)

    before = _run(["models"], b)
    assert before.returncode == 0 and "active model: all-MiniLM-L6-v2\n" in before.stdout

    code, screen = run_on_terminal(
        [*QPIPE, "reembed", "--model", "all-MiniLM-L6-v2", "--truncate-dim", "64"], env=a
    )
    assert code == 0, screen
    assert "search now uses all-MiniLM-L6-v2@64" in screen
    # tqdm's bar: the count, and elapsed<left once the rate is known
    assert re.search(r"re-embedding: 100%.*\| 2/2 \[\d\d:\d\d<\d\d:\d\d", screen), screen
    assert not (Path(a["DAGSTER_HOME"]) / "qpipe" / "active_model.json").exists()

    after = _run(["models"], b)
    assert after.returncode == 0 and "active model: all-MiniLM-L6-v2@64" in after.stdout
    doctor = _run(["doctor", "--json"], b)
    [model] = [c for c in json.loads(doctor.stdout) if c["name"] == "embedding model"]
    assert model["status"] == "ok", model
    assert model["detail"].startswith(
        "all-MiniLM-L6-v2@64 (active since qpipe reembed, shared in table qpipe_active_model at "
        "postgresql://"
    ), model
    assert "secret-not-needed" not in doctor.stdout
    assert not (Path(b["DAGSTER_HOME"]) / "qpipe" / "active_model.json").exists()
