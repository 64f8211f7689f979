"""Start-up env validation: each missing/invalid variable is named in the message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qpipe_dagster.ops.env import PROD_REQUIRED, check_env, env_problems
from qpipe_dagster.settings import SettingError, cron_problem

PROD_OK = {
    "QPIPE_DEPLOY": "prod",
    "DAGSTER_HOME": "/opt/dagster/home",
    "DAGSTER_PG_HOST": "postgres",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "dagster",
    "DAGSTER_PG_PASSWORD": "pw",
    "DAGSTER_PG_DB": "dagster",
    "WEAVIATE_URL": "http://weaviate:8080",
    "QSTASH_CURRENT_SIGNING_KEY": "sig_a",
    "QSTASH_NEXT_SIGNING_KEY": "sig_b",
    "QPIPE_RECEIVER_URL": "https://qpipe.example.com/api/qstash",
}


@pytest.mark.parametrize("role", sorted(PROD_REQUIRED))
def test_complete_prod_env_passes(role: str) -> None:
    assert env_problems(role, PROD_OK) == []


@pytest.mark.parametrize(
    ("role", "name"), [(r, n) for r, names in PROD_REQUIRED.items() for n in names]
)
def test_each_missing_required_variable_is_named(role: str, name: str) -> None:
    env = {k: v for k, v in PROD_OK.items() if k != name}
    with pytest.raises(SettingError) as exc:
        check_env(role, env)
    assert f"{name} is missing" in str(exc.value)
    assert str(exc.value).count("\n  - ") == 1  # exactly that one problem
    blank = {**PROD_OK, name: "  "}
    assert [p for p in env_problems(role, blank) if name in p]


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("DAGSTER_HOME", "relative/home", "absolute path"),
        ("MAX_CONCEPTS_PER_DAY", "-1", "whole number >= 0"),
        ("QSTASH_DAILY_LIMIT", "lots", "whole number >= 1"),
        ("QPIPE_RECRAWL_CRON", "*/15 * * *", "4 fields"),
        ("QPIPE_BACKUP_CRON", "0 3 * * mon", "weekday field"),
        ("QPIPE_REPORT_CRON", "61 6 * * *", "61 is outside 0-59"),
        ("QPIPE_RECRAWL_MAX_AGE_HOURS", "0", "number >= 0.01"),
        ("QPIPE_BACKUP_RETENTION_DAYS", "0", "whole number >= 1"),
        ("QPIPE_EMBED_DEVICE", "tpu", "one of auto, cpu, cuda"),
        ("QPIPE_BACKEND", "metal", "one of auto, cpu, gpu"),
        ("WEAVIATE_URL", "weaviate:8080", "http/https URL"),
        ("BACKUP_URL", "ftp://x/y", "s3:// or r2://"),
        ("QPIPE_DEPLOY", "staging", "one of local, prod"),
        ("WEAVIATE_BACKUP_BACKEND", "tape", "filesystem"),
        ("QPIPE_EMBED_DEVICE", "cuda:x", "cuda:N"),
        ("WEAVIATE_URL", "http://weaviate:abc", "http/https URL"),
        ("WEAVIATE_GRPC_PORT", "abc", "whole number from 1 to 65535"),
        # more digits than int() parses: Python's "Exceeds the limit (4300 digits)" leaked
        ("WEAVIATE_GRPC_PORT", "9" * 5000, "whole number from 1 to 65535"),
        # the receiver refuses these at start-up; the start-up check used to pass them
        ("QPIPE_RECEIVER_RATE_LIMIT", "inf", "must be a finite number"),
        ("QPIPE_RECEIVER_CLOCK_TOLERANCE_S", "nan", "must be a finite number"),
        ("QPIPE_RECEIVER_MAX_BODY_BYTES", "2.5", "whole number from 1 to 1073741824"),
        ("QPIPE_RECEIVER_URL", "http:///x", "URL with a host"),
        ("QPIPE_ALLOW_MODEL_DOWNLOAD", "true", "one of 0, 1"),
        ("QPIPE_DEFAULT_SYMBOL", "BTC USD", "market symbol like BTC-USD"),
        ("QPIPE_CRAWL_PRIVATE_ADDRESSES", "no", "must be allow or refuse"),
    ],
)
def test_invalid_values_are_named(name: str, value: str, why: str) -> None:
    problems = env_problems("local", {name: value})
    assert len(problems) == 1
    assert problems[0].startswith(f"{name}={value!r} is invalid") and why in problems[0]


def test_partial_r2_and_key_pairs() -> None:
    assert any(
        "R2_KEY, R2_SECRET missing" in p for p in env_problems("backup", {"R2_ACCOUNT_ID": "a"})
    )
    full = {"R2_ACCOUNT_ID": "a", "R2_KEY": "k", "R2_SECRET": "s"}
    assert any("R2_BUCKET is missing" in p for p in env_problems("backup", full))
    assert env_problems("backup", {**full, "R2_BUCKET": "b"}) == []
    assert any(
        "QSTASH_CURRENT_SIGNING_KEY is missing" in p
        for p in env_problems("receiver", {"QSTASH_NEXT_SIGNING_KEY": "x"})
    )
    assert env_problems("nope", {}) == [
        "role 'nope' is not one of code-location, webserver, daemon, receiver, backup, local"
    ]


def test_local_defaults_need_nothing() -> None:
    assert env_problems("code-location", {}) == []


def test_cron_validator() -> None:
    for ok in ("*/15 * * * *", "0 3 * * *", "0,30 8-18/2 1-15 1,6,12 0-6", "5 4 * * 7"):
        assert cron_problem(ok) is None, ok
    assert "outside 0-23" in cron_problem("0 24 * * *")
    assert "outside 1-12" in cron_problem("0 0 1 13 *")


def test_module_entry_point_exits_2_naming_the_variable() -> None:
    env = {"PATH": "/usr/bin:/bin", "QPIPE_DEPLOY": "prod"}
    proc = subprocess.run(
        [sys.executable, "-m", "qpipe_dagster.ops.env", "--role", "daemon"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert (
        "DAGSTER_PG_PASSWORD is missing" in proc.stderr and "DAGSTER_HOME is missing" in proc.stderr
    )


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        # old: str.isdigit() passed '²', then int() raised a bare ValueError out of the check
        ("MAX_CONCEPTS_PER_DAY", "²", "whole number >= 0"),
        ("QSTASH_DAILY_LIMIT", "9" * 5000, "whole number >= 1"),
        # old: passed, then the code location failed to load with OverflowError
        ("QPIPE_RECRAWL_MAX_AGE_HOURS", "inf", "number >= 0.01 and <= 1000000 (hours)"),
        # old: passed, then Dagster refused the schedule without naming the variable
        ("QPIPE_BACKUP_CRON", "0 3 * * 1/0", "weekday field '1/0': a step of 0"),
        ("QPIPE_RECRAWL_CRON", "*/0 * * * *", "minute field '*/0': a step of 0"),
        # old: passed, and the schedule never ran (there is no April 31st)
        ("QPIPE_REPORT_CRON", "30 6 31 4 *", "day field '31' never occurs in month field '4'"),
        ("QPIPE_BACKUP_CRON", "0 3 30,31 2 *", "never occurs in month field '2'"),
    ],
)
def test_values_that_used_to_crash_or_pass_are_named(name: str, value: str, why: str) -> None:
    problems = env_problems("local", {name: value})
    assert len(problems) == 1
    assert problems[0].startswith(f"{name}={value!r} is invalid") and why in problems[0]


def test_cron_validator_keeps_accepting_what_runs() -> None:
    for ok in ("0 0 29 2 *", "0 3 31 4 1", "5-1 3 * * *", "0 3 31 4-6 *", "0 3 10/05 * *"):
        assert cron_problem(ok) is None, ok


def test_prod_code_location_runs_on_the_local_store_without_weaviate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old: WEAVIATE_URL was required for the code role, so production could not use LanceDB."""
    env = {k: v for k, v in PROD_OK.items() if k != "WEAVIATE_URL"}
    assert env_problems("code-location", env) == []
    proc = subprocess.run(
        [sys.executable, "-m", "qpipe_dagster.ops.env", "--role", "code-location"],
        env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # and the code location's resources then open the local store, on the configured path
    from qpipe_dagster.defs.resources import default_resources

    lance = tmp_path / "state" / "vectors"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WEAVIATE_URL", raising=False)
    monkeypatch.setenv("QPIPE_LANCE_PATH", str(lance))
    store = default_resources()["vector_store"].open("all-MiniLM-L6-v2", 384)
    try:
        assert type(store).__name__ == "LanceStore"
    finally:
        getattr(store, "close", lambda: None)()
    assert lance.is_dir()
