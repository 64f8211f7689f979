"""The project as the current Dagster CLI (`dg`, from dagster-dg-cli) sees it: `[tool.dg]` in
pyproject.toml names the code location, and `make run` starts the stack with `dg dev`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DG = Path(sys.executable).parent / "dg"


@pytest.mark.skipif(not DG.exists(), reason="dg (dagster-dg-cli) is not installed: make install")
def test_dg_check_defs_loads_the_definitions(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")  # as make run's DAGSTER_HOME
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": sys.prefix}
    proc = subprocess.run(
        [str(DG), "check", "defs"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "All definitions loaded successfully" in out, out[-4000:]
    assert "warning" not in out.lower(), out[-4000:]  # no venv mismatch, no superseded CLI


def test_make_run_starts_the_stack_with_dg_dev() -> None:
    source = (REPO / "qpipe_dagster" / "devstack.py").read_text("utf-8")
    assert '(str(bin_dir / "dg"), "dev")' in source
    assert '(str(bin_dir / "dagster"), "dev"' not in source
