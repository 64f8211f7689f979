"""One owner of the state layout: only `qpipe_dagster.paths` spells $DAGSTER_HOME/qpipe/...

Every other module asks `state_paths(env)` (or `state_paths_under(home)`), so an override
variable (QPIPE_INBOX_PATH, QPIPE_BACKUP_DIR, ...) is honoured everywhere or nowhere, and a
backup, the metrics exporter and the pipeline never disagree about where a file lives. The
check parses each module with `ast` and flags a path joined with one of the state folders
(`home / "qpipe"`, `Path(home, "vectors")`, `os.path.join(home, "qpipe")`) and any string that
names a state file (`"inbox.sqlite"`, `"qpipe/active_model.json"`, `".dagster_home"`). Prose
that mentions them (docstrings, messages: strings with spaces) is not flagged.
"""

from __future__ import annotations

import ast
from pathlib import Path

from qpipe_dagster_tests.tooling.owners import offenders

OWNER = Path("qpipe_dagster/paths.py")

# The folders under DAGSTER_HOME (only flagged where a path is joined: "assets" is also a label)
STATE_FOLDERS = frozenset({"qpipe", "assets", "vectors", "backups", "trials"})
# The files (flagged wherever a string names one, alone or at the end of a path)
STATE_FILES = frozenset(
    {
        "inbox.sqlite",
        "concepts.sqlite",
        "active_model.json",
        "publishes.sqlite",
        "breakers.sqlite",
        ".dagster_home",
    }
)
_JOINS = frozenset({"Path", "PurePath", "PosixPath", "UPath", "joinpath", "join"})

# Strings that are not state paths, each with its reason. (path, line text fragment)
ALLOWED: dict[tuple[str, str], str] = {
    ("qpipe_dagster/ops/active_model_backup.py", 'FILE = "active_model.json"'): (
        "the member's name inside a backup archive (staging/), not where the choice lives"
    ),
    ("qpipe_dagster/devstack.py", 'Path(sys.executable).parent / "qpipe"'): (
        "the `qpipe` console script beside the interpreter, not a state folder"
    ),
}


def _text(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _names_file(text: str) -> bool:
    """`text` is a state file's name, or a path (no spaces) ending in one."""
    if any(c.isspace() for c in text):
        return False
    return text in STATE_FILES or any(text.endswith("/" + name) for name in STATE_FILES)


def _joined_folder(node: ast.AST) -> bool:
    """`x / "qpipe"`, `"qpipe" / x`, `Path(x, "qpipe")`, `x.joinpath("qpipe")`, `join(x, ...)`."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return any(_text(side) in STATE_FOLDERS for side in (node.left, node.right))
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        return name in _JOINS and any(_text(arg) in STATE_FOLDERS for arg in node.args)
    return False


def state_paths_spelled(source: str, filename: str = "<module>") -> list[int]:
    """Lines of `source` that spell a part of the state layout themselves."""
    lines = set()
    for node in ast.walk(ast.parse(source, filename)):
        text = _text(node) if isinstance(node, ast.expr) else None
        if _joined_folder(node) or (text is not None and _names_file(text)):
            lines.add(getattr(node, "lineno", 0))
    return sorted(lines)


def _offenders() -> list[str]:
    return offenders(OWNER, ALLOWED, state_paths_spelled)


def test_only_the_paths_module_spells_the_state_layout() -> None:
    offenders = _offenders()
    assert not offenders, (
        "ask qpipe_dagster.paths.state_paths(env) (add a StatePaths field if one is missing):\n  "
        + "\n  ".join(offenders)
    )


def test_the_checker_catches_planted_state_paths() -> None:
    planted = (
        "import os\n"
        "from pathlib import Path\n"
        "a = home / 'qpipe' / 'inbox.sqlite'\n"
        "b = Path(home, 'vectors')\n"
        "c = os.path.join(home, 'qpipe')\n"
        "d = 'qpipe/active_model.json'\n"
        "e = Path(env.get('DAGSTER_HOME') or '.dagster_home')\n"
        "f = home.joinpath('backups')\n"
        "g = f'{home}' + '/publishes.sqlite'\n"
        "'''Docs may say $DAGSTER_HOME/qpipe/inbox.sqlite in prose.'''\n"
        "h = {'assets': 1}['assets']\n"  # a label, not a join
        "i = staging / 'parsed_pages'\n"  # not a state folder
        "raise ValueError('cannot open concepts.sqlite here')\n"  # a message
    )
    assert state_paths_spelled(planted) == [3, 4, 5, 6, 7, 8, 9]
