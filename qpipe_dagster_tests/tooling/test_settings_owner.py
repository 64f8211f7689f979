"""One settings owner: only `qpipe_dagster.settings` reads environment variables.

Every other module asks its getters (or `env_value`), so a variable is parsed, and refused with
the same message, in one place. The check parses each module with `ast` and flags
`os.environ.get(...)`, `os.environ[...]` read, `os.getenv(...)` and `environ.get(...)` after
`from os import environ`. Passing the environment to child processes (`{**os.environ, ...}`,
`os.environ.copy()`), setting variables for children, and handing `os.environ` to a getter as
a mapping are not reads and are not flagged.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("qpipe_dagster", "webhook_sensor")
OWNER = Path("qpipe_dagster/settings.py")

# Reads that are not configuration parsing, each with its reason. (path, line text fragment)
ALLOWED: dict[tuple[str, str], str] = {}


def _is_environ(node: ast.expr) -> bool:
    """`os.environ` or a bare `environ` (from `from os import environ`)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id == "environ"


def env_reads(source: str, filename: str = "<module>") -> list[int]:
    """Lines of `source` that read an environment variable directly."""
    lines = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            reads_environ = func.attr == "get" and _is_environ(func.value)
            getenv = (
                func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os"
            )
            if reads_environ or getenv:
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and _is_environ(node.value)
        ):
            lines.append(node.lineno)
    return sorted(lines)


def _offenders() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO)
            if rel == OWNER:
                continue
            text = path.read_text("utf-8")
            source_lines = text.splitlines()
            for line in env_reads(text, str(rel)):
                code = source_lines[line - 1].strip()
                if any(p == str(rel) and frag in code for p, frag in ALLOWED):
                    continue
                found.append(f"{rel}:{line}: {code}")
    return found


def test_only_the_settings_module_reads_environment_variables() -> None:
    offenders = _offenders()
    assert not offenders, (
        "read these through qpipe_dagster.settings (a getter, or env_value):\n  "
        + "\n  ".join(offenders)
    )


def test_the_checker_catches_a_planted_read() -> None:
    planted = (
        "import os\n"
        "from os import environ\n"
        "a = os.environ.get('QPIPE_X')\n"
        "b = os.getenv('QPIPE_Y', '1')\n"
        "c = os.environ['QPIPE_Z']\n"
        "d = environ.get('QPIPE_W')\n"
        "child = {**os.environ, 'QPIPE_V': '1'}\n"  # passing through: not a read
        "os.environ['QPIPE_U'] = '1'\n"  # setting for a child: not a read
        "copy = os.environ.copy()\n"
    )
    assert env_reads(planted) == [3, 4, 5, 6]
