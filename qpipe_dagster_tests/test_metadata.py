"""Plain metadata values and their Dagster rendering (order kept, Markdown as markdown)."""

from __future__ import annotations

import numpy as np
import pytest
from dagster import MetadataValue

from qpipe_dagster.defs.metadata import dagster_metadata
from qpipe_dagster.metadata import Markdown, figure, markdown_table, plain


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.5, 1.5), (float("nan"), "n/a"), (float("inf"), "n/a"), (3, 3), (True, True), ("x", "x"),
     (None, "none"), (np.int64(4), "4")],
)  # fmt: skip
def test_plain(value: object, expected: object) -> None:
    assert plain(value) == expected


def test_figure_and_table() -> None:
    assert figure(2) == 2.0 and figure(float("nan")) == figure(None) == figure("1") == "n/a"
    table = markdown_table([{"a": 1.0, "b": None}, {"a": float("inf"), "b": "x"}], ["a", "b"])
    assert isinstance(table, Markdown)
    assert table == "| a | b |\n|---|---|\n| 1.0000 | n/a |\n| n/a | x |\n"


def test_dagster_metadata_renders_markdown_and_keeps_the_rest_and_the_order() -> None:
    out = dagster_metadata({"z": 1, "chart": Markdown("![c](data:,)"), "a": "text"})
    assert list(out) == ["z", "chart", "a"]
    assert out["z"] == 1 and out["a"] == "text"
    assert out["chart"] == MetadataValue.md("![c](data:,)")
