"""The scan both one-owner checkers share: lines outside a rule's owner module that break it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("qpipe_dagster", "webhook_sensor")


def offenders(
    owner: Path,
    allowed: Mapping[tuple[str, str], str],
    lines_of: Callable[[str, str], list[int]],
) -> list[str]:
    """`path:line: code` for each line `lines_of(source, filename)` flags outside `owner`,
    except the (path, code fragment) pairs in `allowed`."""
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO)
            if rel == owner:
                continue
            text = path.read_text("utf-8")
            source_lines = text.splitlines()
            for line in lines_of(text, str(rel)):
                code = source_lines[line - 1].strip()
                if any(p == str(rel) and frag in code for p, frag in allowed):
                    continue
                found.append(f"{rel}:{line}: {code}")
    return found
