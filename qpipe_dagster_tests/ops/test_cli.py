"""`qpipe backup / restore / doctor` as a user runs them: real processes, real stores."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qpipe_dagster.cli import build_parser, main
from qpipe_dagster_tests.ops.helpers import fill_stores


def _qpipe(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    for var in (
        "WEAVIATE_URL",
        "BACKUP_URL",
        "R2_ACCOUNT_ID",
        "QPIPE_LANCE_PATH",
        "QPIPE_INBOX_PATH",
    ):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "qpipe_dagster.cli", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_backup_restore_commands(dagster_home: Path, tmp_path: Path) -> None:
    fill_stores(dagster_home)
    target = str(tmp_path / "bk")
    done = _qpipe("backup", "--target", target, home=dagster_home)
    assert done.returncode == 0, done.stderr
    backup_id = done.stdout.strip().splitlines()[-1]
    assert backup_id.startswith("qpipe-")
    assert "inbox: 3 rows" in done.stderr

    refused = _qpipe("restore", backup_id, "--target", target, home=dagster_home)
    assert refused.returncode == 2 and "needs empty stores" in refused.stderr

    shutil.rmtree(dagster_home / "qpipe")
    dry = _qpipe("restore", backup_id, "--target", target, "--dry-run", home=dagster_home)
    assert dry.returncode == 0, dry.stderr
    assert "would restore inbox: 3 rows" in dry.stdout and "nothing changed" in dry.stdout
    assert not (dagster_home / "qpipe" / "inbox.sqlite").exists()

    ok = _qpipe("restore", backup_id, "--target", target, home=dagster_home)
    assert ok.returncode == 0, ok.stderr
    assert f"restored {backup_id}: verified" in ok.stdout

    bad = _qpipe("restore", "qpipe-19990101-000000", "--target", target, home=dagster_home)
    assert bad.returncode == 2 and "not found" in bad.stderr


def test_doctor_prints_a_table_and_fails_on_unhealthy(dagster_home: Path) -> None:
    ok = _qpipe("doctor", home=dagster_home)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    text = ok.stdout
    for name in ("dagster instance", "vector store", "inbox", "gpu", "backup target", "postgres"):
        assert name in text
    assert "validator backend:" in text

    (dagster_home / "dagster.yaml").unlink()
    env_bad = {**os.environ, "DAGSTER_HOME": str(dagster_home), "QPIPE_BACKEND": "quantum"}
    bad = subprocess.run(
        [sys.executable, "-m", "qpipe_dagster.cli", "doctor"],
        env=env_bad, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "QPIPE_BACKEND='quantum' is invalid" in bad.stdout
    assert "no dagster.yaml" in bad.stdout


def test_bad_retention_env_fails_only_backup_with_its_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Read while building the parser, a bad value used to crash every command."""
    monkeypatch.setenv("QPIPE_BACKUP_RETENTION_DAYS", "abc")
    assert build_parser().parse_args(["models"]).command == "models"
    assert main(["backup", "--target", str(tmp_path / "bk")]) == 2
    err = capsys.readouterr().err
    assert "QPIPE_BACKUP_RETENTION_DAYS must be a whole number of days, got 'abc'" in err
    assert not (tmp_path / "bk").exists()


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_submit_backoff_must_be_seconds(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["submit", "x", "--mode", "local", "--backoff", value])
    assert info.value.code == 2
    assert f"argument --backoff: {value!r} is not a number of seconds" in capsys.readouterr().err


def test_reembed_bad_batch_size_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reembed", "--model", "all-MiniLM-L6-v2", "--batch-size", "0"]) == 2
    assert "qpipe: error: embedding batch_size must be >= 1, got 0" in capsys.readouterr().err


def test_backup_and_restore_progress_is_lines_when_piped_and_json_on_request(
    dagster_home: Path, tmp_path: Path
) -> None:
    """Piped (a cron job, a log file), progress is one line per component with the count and
    time left; --json prints one object on stdout and still only lines on stderr."""
    import json

    fill_stores(dagster_home)
    target = str(tmp_path / "bk")
    done = _qpipe("backup", "--target", target, home=dagster_home)
    assert done.returncode == 0, done.stderr
    steps = [line for line in done.stderr.splitlines() if line.startswith("backing up: [")]
    total = int(steps[-1].split("/")[1].split("]")[0])
    assert total >= 3 and steps[-1].startswith(f"backing up: [{total}/{total}] uploaded to")
    assert steps[0].startswith(f"backing up: [1/{total}]") and "s left)" in steps[0]
    assert "\r" not in done.stderr  # no bar redraws in a log

    shutil.rmtree(dagster_home / "qpipe")
    backup_id = done.stdout.strip().splitlines()[-1]
    ok = _qpipe("restore", backup_id, "--target", target, "--json", home=dagster_home)
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["backup_id"] == backup_id and out["verified"] and not out["dry_run"]
    n = len(out["steps"])
    assert f"verifying backup: [{n}/{n}]" in ok.stderr
    assert f"restoring: [{n}/{n}]" in ok.stderr and "\r" not in ok.stderr

    again = _qpipe("backup", "--target", target, "--json", home=dagster_home)
    assert again.returncode == 0, again.stderr
    made = json.loads(again.stdout)
    assert made["backup_id"].startswith("qpipe-") and made["target"]
    assert {c["name"] for c in made["components"]} >= {"inbox", "concepts"}


def test_backup_shows_a_progress_bar_on_a_terminal(dagster_home: Path, tmp_path: Path) -> None:
    from qpipe_dagster_tests.cli.terminal import run_on_terminal

    fill_stores(dagster_home)
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    for var in ("WEAVIATE_URL", "BACKUP_URL", "R2_ACCOUNT_ID", "QPIPE_LANCE_PATH"):
        env.pop(var, None)
    argv = [sys.executable, "-m", "qpipe_dagster.cli", "backup", "--target", str(tmp_path / "b")]
    code, text = run_on_terminal(argv, env=env)
    assert code == 0, text
    assert ("backing up:" in text and "component/s" in text) or "it/s" in text, text
    assert "\r" in text and "backing up: [1/" not in text  # a redrawn bar, not lines
    assert re.search(r"backing up: 100%\|.*\| (\d+)/\1 \[\d\d:\d\d<00:00", text), text
