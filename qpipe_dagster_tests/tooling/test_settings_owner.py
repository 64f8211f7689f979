"""One settings owner: only `qpipe_dagster.settings` reads environment variables.

Every other module asks its getters (or `env_value`), so a variable is parsed, and refused with
the same message, in one place. The check parses each module with `ast` and flags
`os.environ.get(...)`, `os.environ[...]` read, `os.getenv(...)` and `environ.get(...)` after
`from os import environ`. Passing the environment to child processes (`{**os.environ, ...}`,
`os.environ.copy()`), setting variables for children, and handing `os.environ` to a getter as
a mapping are not reads and are not flagged.

A passed-in environment is read through the owner too: `env.get("QPIPE_X")` or
`env["DAGSTER_HOME"]` (an upper-case, variable-like string literal on a mapping named `env`,
`environ` or `environment`, or such an attribute) skips the parser as surely as `os.environ`
does, so it is flagged as well.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from qpipe_dagster_tests.tooling.owners import offenders

OWNER = Path("qpipe_dagster/settings.py")

# Reads that are not configuration parsing, each with its reason. (path, line text fragment)
ALLOWED: dict[tuple[str, str], str] = {
    ("qpipe_dagster/crawl/runner.py", 'env.get("PYTHONPATH")'): (
        "builds a child's environment: extends the inherited PYTHONPATH, parses nothing"
    ),
}
ENV_MAPPINGS = frozenset({"env", "environ", "environment"})
_VARIABLE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")  # QPIPE_X, DAGSTER_HOME, PATH


def _is_environ(node: ast.expr) -> bool:
    """`os.environ` or a bare `environ` (from `from os import environ`)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id == "environ"


def _is_env_mapping(node: ast.expr) -> bool:
    """A mapping named like an environment: `env`, `environment`, `self.env`, ..."""
    if isinstance(node, ast.Attribute):
        return node.attr in ENV_MAPPINGS
    return isinstance(node, ast.Name) and node.id in ENV_MAPPINGS


def _names_variable(node: ast.expr | None) -> bool:
    """An upper-case string literal that looks like an environment variable's name."""
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and _VARIABLE.fullmatch(node.value) is not None
    )


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
            reads_mapping = (
                func.attr == "get"
                and _is_env_mapping(func.value)
                and bool(node.args)
                and _names_variable(node.args[0])
            )
            if reads_environ or getenv or reads_mapping:
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and (
                _is_environ(node.value)
                or (_is_env_mapping(node.value) and _names_variable(node.slice))
            )
        ):
            lines.append(node.lineno)
    return sorted(lines)


def _offenders() -> list[str]:
    return offenders(OWNER, ALLOWED, env_reads)


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


def test_the_checker_catches_a_planted_read_of_a_passed_in_environment() -> None:
    planted = (
        "def f(env, self, environment, key):\n"
        "    a = env.get('QPIPE_X', '')\n"
        "    b = env['DAGSTER_HOME']\n"
        "    c = self.env.get('WEAVIATE_URL')\n"
        "    d = environment['R2_BUCKET']\n"
        "    env['QPIPE_Y'] = '1'\n"  # setting a child's variable: not a read
        "    e = env.get(key)\n"  # a name from a table: the table's owner parses it
        "    g = env.get('lowercase')\n"  # not a variable name
        "    h = config.get('QPIPE_Z')\n"  # not an environment mapping
        "    return {**env, 'PATH': '/bin'}\n"  # passing through
    )
    assert env_reads(planted) == [2, 3, 4, 5]
