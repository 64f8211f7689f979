"""Stage metadata (plain values and `Markdown`) as Dagster metadata, order kept."""

from __future__ import annotations

from collections.abc import Mapping

from dagster import MetadataValue

from qpipe_dagster.metadata import Markdown, Plain


def dagster_metadata(values: Mapping[str, Plain]) -> dict[str, MetadataValue | Plain]:
    """`Markdown` becomes ``MetadataValue.md``; every other value passes through as it is."""
    return {
        k: MetadataValue.md(str(v)) if isinstance(v, Markdown) else v for k, v in values.items()
    }
