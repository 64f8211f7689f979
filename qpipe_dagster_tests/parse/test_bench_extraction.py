"""bench/extraction.py runs on any folder in the benchmark layout and fails clearly otherwise."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

from qpipe_dagster_tests.parse.conftest import PAGES

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "extraction.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_reports_metrics_beside_trafilatura(tmp_path: Path) -> None:
    (tmp_path / "html").mkdir()
    truth = {
        "a1": {
            "url": "https://news.example.com/markets/momentum-crossovers",
            "articleBody": "The golden cross, a fifty-day moving average rising above the "
            "two-hundred-day average, remains one of the most quoted signals.",
        },
        "b2": {
            "url": "https://quant.example.org/t",
            "articleBody": "A breakout rule buys when the close exceeds the highest high.",
        },
    }
    for page_id, name in (("a1", "boilerplate.html"), ("b2", "table_code.html")):
        (tmp_path / "html" / f"{page_id}.html.gz").write_bytes(
            gzip.compress((PAGES / name).read_bytes())
        )
    (tmp_path / "ground-truth.json").write_text(json.dumps(truth))
    result = _run("--articles", str(tmp_path), "--repeat", "1")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("pages", "f1", "precision", "recall", "pages_per_s", "peer_f1", "peer_pages_per_s"):
        assert key in summary
    assert summary["pages"] == 2
    # the references are short excerpts of long articles: recall perfect, precision low
    assert summary["recall"] == 1.0
    assert 0 < summary["precision"] < 0.5
    assert summary["pages_per_s"] > 0 and summary["peer_pages_per_s"] > 0


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = _run("--articles", str(tmp_path / "nope"))
    assert result.returncode != 0
    assert "articles folder not found" in result.stderr


def test_folder_without_ground_truth_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "html").mkdir()
    result = _run("--articles", str(tmp_path))
    assert result.returncode != 0
    assert "ground-truth.json" in result.stderr
