"""Dagster definitions stay thin: every asset, op, sensor and schedule body in `defs/` is at
most `MAX_BODY_LINES` lines, so the decisions live in stage code that is tested directly."""

from __future__ import annotations

import ast
from pathlib import Path

DEFS = Path(__file__).resolve().parents[2] / "qpipe_dagster" / "defs"
MAX_BODY_LINES = 30
DECORATORS = {"asset", "multi_asset", "graph_asset", "graph_multi_asset", "asset_check",
              "multi_asset_check", "op", "sensor", "schedule"}  # fmt: skip


def _decorator_name(node: ast.expr) -> str:
    """``asset`` for ``@asset``, ``@asset(...)`` and ``@dagster.asset(...)``."""
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Attribute):
        return target.attr
    return target.id if isinstance(target, ast.Name) else ""


def _is_definition(name: str) -> bool:
    return name in DECORATORS or name.endswith("_sensor")  # run_failure_sensor, asset_sensor…


def body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of the function."""
    body = fn.body
    if isinstance(body[0], ast.Expr) and isinstance(ast.get_docstring(fn, clean=False), str):
        body = body[1:]
    if not body:
        return 0
    return (body[-1].end_lineno or body[-1].lineno) - body[0].lineno + 1


def definition_bodies(source: str) -> dict[str, int]:
    """Every function decorated as a Dagster definition (nested ones too) -> its body lines."""
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
            _is_definition(_decorator_name(d)) for d in node.decorator_list
        ):
            found[node.name] = body_lines(node)
    return found


def test_the_walker_measures_bodies_and_finds_nested_definitions() -> None:
    source = '''
@dagster.asset(group_name="g")
@transient_only
def big(context):
    """Docstring lines are not counted."""
    a = 1
    return a

def build():
    @schedule(cron_schedule="* * * * *")
    def nested(context):
        return [
            1,
        ]

@run_failure_sensor
def alert(context):
    pass

def plain():
    return 1
'''
    assert definition_bodies(source) == {"big": 2, "nested": 3, "alert": 1}


def test_every_definition_body_in_defs_is_thin() -> None:
    bodies = {}
    for path in sorted(DEFS.glob("*.py")):
        for name, lines in definition_bodies(path.read_text("utf-8")).items():
            bodies[f"{path.name}:{name}"] = lines
    assert "validation.py:backtest_results" in bodies  # the walker sees the real definitions
    assert "operations.py:recrawl_schedule" in bodies
    too_long = [
        f"{name} ({lines} lines)" for name, lines in bodies.items() if lines > MAX_BODY_LINES
    ]
    assert not too_long, (
        f"Dagster definition bodies longer than {MAX_BODY_LINES} lines: {', '.join(too_long)}; "
        "move the logic into a pure stage function (crawl/, parse/, backtest/, trials/, ops/ …) "
        "and leave the definition as wiring"
    )
