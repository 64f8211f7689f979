"""Validation of the Pipes extras the `crawled_pages` asset sends to the crawler child."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qpipe_dagster.crawl.runner import _extras_inputs, pipes_extras
from qpipe_dagster.crawl.settings import CrawlSettings


@pytest.mark.parametrize(
    ("extras", "message"),
    [
        ([], "Pipes extras must be a dict, got list"),
        ({"seeds": ["http://x.org/"], "out_path": "o", "sedds": []}, r"unknown .*: sedds"),
        ({"out_path": "o"}, "Pipes extras is missing 'seeds'"),
        ({"seeds": ["http://x.org/"]}, "Pipes extras is missing 'out_path'"),
        ({"seeds": ["http://x.org/"], "out_path": 3}, "out_path must be a string, got 3"),
        ({"seeds": ["x"], "out_path": "o"}, "invalid seed URL 'x'"),
        (
            {"seeds": ["http://x.org/"], "out_path": "o", "settings": {"max_pages": 0}},
            r"CrawlSettings\.max_pages must be >= 1",
        ),
    ],
)
def test_pipes_extras_errors_are_clear(extras: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _extras_inputs(extras)


def test_pipes_extras_round_trip(tmp_path: Path) -> None:
    s = CrawlSettings(max_depth=1)
    extras = json.loads(json.dumps(pipes_extras(["HTTP://X.org"], s, tmp_path / "o.arrow")))
    assert _extras_inputs(extras) == (["http://x.org/"], s, tmp_path / "o.arrow")
