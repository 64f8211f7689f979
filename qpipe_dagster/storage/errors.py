"""What a stored table that cannot be read back raises, wherever it lives (disk or bucket)."""

from __future__ import annotations

from pathlib import Path

from upath import UPath


class StoredTableError(ValueError):
    """A stored table that cannot be read back; the message names the file and what to redo."""


def redo_hint(folder: Path | UPath) -> str:
    """What to re-materialize for `folder` (laid out as <asset>/<partition> by the IO manager)."""
    return f"materialize {folder.parent.name} for partition {folder.name!r} again to rewrite it"
