"""Fixtures for the parse stage: the shipped test pages and the packaged model's tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

PAGES = Path(__file__).resolve().parent / "pages"


def page_bytes(name: str) -> bytes:
    return (PAGES / name).read_bytes()


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """The real all-MiniLM-L6-v2 tokenizer from the offline model package."""
    from qpipe_dagster.parse.chunk import default_tokenizer

    return default_tokenizer()
