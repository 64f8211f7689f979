"""`qpipe backup`, `qpipe restore` and `qpipe doctor`: the runbook's operations as commands.

backup prints the backup id on stdout (the last line), restore verifies counts and checksums
against the manifest (`--dry-run` only shows the plan), doctor prints a table and exits 1 when
a configured dependency is unhealthy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping

from qpipe_dagster.cli import CliError
from qpipe_dagster.cli.progress import meters, say
from qpipe_dagster.ops.doctor import DEFAULT_CHECKS, FAIL, OK, Check, format_table, run_checks
from qpipe_dagster.settings import (
    MIN_BACKUP_RETENTION_DAYS,
    SettingError,
    backup_retention_days,
    env_value,
)


def _backup(args: argparse.Namespace) -> int:
    from qpipe_dagster.ops.backup import Sources, run_backup
    from qpipe_dagster.ops.manifest import BackupError
    from qpipe_dagster.ops.targets import target_from_env

    keep_days = args.keep_days if args.keep_days is not None else _env_retention_days()
    try:
        target = target_from_env(args.target)
        result = run_backup(
            Sources.from_env(),
            target,
            retention_days=keep_days,
            log=say,
            meter=meters(json_mode=args.json),
        )
    except BackupError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(
            json.dumps(
                {
                    "backup_id": result.backup_id,
                    "target": result.target,
                    "components": [
                        {"name": c.name, "rows": c.rows, "bytes": c.bytes}
                        for c in result.manifest.components
                    ],
                    "deleted_by_retention": result.deleted_by_retention,
                    "swept_incomplete": result.swept_incomplete,
                }
            )
        )
        return 0
    for c in result.manifest.components:
        print(f"{c.name}: {c.rows} rows, {c.bytes} bytes", file=sys.stderr)
    if result.deleted_by_retention:
        print(f"retention removed: {', '.join(result.deleted_by_retention)}", file=sys.stderr)
    if result.swept_incomplete:
        removed = ", ".join(result.swept_incomplete)
        print(f"interrupted backups removed (no manifest): {removed}", file=sys.stderr)
    print(f"backup written to {result.target}", file=sys.stderr)
    print(result.backup_id)
    return 0


def _env_retention_days() -> int:
    """QPIPE_BACKUP_RETENTION_DAYS, read only by `backup`: parsed while building the parser,
    a bad value broke every qpipe command with a traceback. Parsed as the start-up check does
    (int() let '-1' and '0' through, to be refused by run_backup)."""
    from qpipe_dagster.ops.backup import DEFAULT_RETENTION_DAYS

    try:
        days = backup_retention_days()
    except SettingError:
        raw = env_value("QPIPE_BACKUP_RETENTION_DAYS")
        raise CliError(
            f"QPIPE_BACKUP_RETENTION_DAYS must be a whole number of days, got {raw!r}: set"
            f" {MIN_BACKUP_RETENTION_DAYS} or more, or unset it for {DEFAULT_RETENTION_DAYS}"
        ) from None
    return DEFAULT_RETENTION_DAYS if days is None else days


def _restore(args: argparse.Namespace) -> int:
    from qpipe_dagster.ops.backup import Sources, restore_backup
    from qpipe_dagster.ops.manifest import BackupError
    from qpipe_dagster.ops.targets import target_from_env

    try:
        plan = restore_backup(
            args.backup_id,
            Sources.from_env(),
            target_from_env(args.target),
            dry_run=args.dry_run,
            log=say,
            meter=meters(json_mode=args.json),
        )
    except BackupError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        verified = not args.dry_run
        print(
            json.dumps(
                {
                    "backup_id": plan.backup_id,
                    "steps": plan.steps,
                    "dry_run": args.dry_run,
                    "verified": verified,
                }
            )
        )
        return 0
    prefix = "would " if args.dry_run else ""
    for step in plan.steps:
        print(prefix + step)
    print("dry run: nothing changed" if args.dry_run else f"restored {plan.backup_id}: verified")
    return 0


def _list(args: argparse.Namespace) -> int:
    from qpipe_dagster.ops.manifest import BackupError
    from qpipe_dagster.ops.targets import target_from_env

    try:
        for backup_id in target_from_env(args.target).list_ids():
            print(backup_id)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    return 0


def check_dagster_instance(env: Mapping[str, str]) -> Check:
    """The Dagster instance's storage answers (SQLite here, Postgres in production)."""
    home = env_value("DAGSTER_HOME", env) or ""
    if home and os.path.exists(home) and not os.path.isdir(home):
        return Check("dagster instance", FAIL, f"DAGSTER_HOME={home} is a file, not a folder")
    if not home or not os.path.isfile(os.path.join(home, "dagster.yaml")):
        return Check(
            "dagster instance", FAIL, f"no dagster.yaml in DAGSTER_HOME={home or '(unset)'}"
        )
    from dagster import DagsterInstance

    try:
        with DagsterInstance.from_config(home) as instance:
            runs = instance.get_runs_count()
            storage = type(instance.run_storage).__name__
    except Exception as exc:
        import yaml

        if isinstance(exc, yaml.YAMLError):  # the parser's message says where, not which file
            detail = " ".join(str(exc).split())
            where = os.path.join(home, "dagster.yaml")
            return Check("dagster instance", FAIL, f"{where} is not valid YAML: {detail}")
        return Check("dagster instance", FAIL, f"{home}: {type(exc).__name__}: {exc}")
    return Check("dagster instance", OK, f"{home}: {storage}, {runs} runs")


def _doctor(args: argparse.Namespace) -> int:
    results = run_checks([check_dagster_instance, *DEFAULT_CHECKS])
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        print(format_table(results))
    return 1 if any(r.status == FAIL for r in results) else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    target_help = (
        "path, file://, s3://bucket/prefix or r2://bucket/prefix "
        "(default: BACKUP_URL, R2_* + R2_BUCKET, else $DAGSTER_HOME/qpipe/backups)"
    )
    json_help = "one JSON object on stdout; progress as plain lines on stderr, never a bar"
    backup = subparsers.add_parser(
        "backup", help="snapshot the vector store, inbox and concepts; prints the backup id"
    )
    backup.add_argument("--target", help=target_help)
    backup.add_argument(
        "--keep-days",
        type=int,
        default=None,
        help="delete backups older than this many days (default QPIPE_BACKUP_RETENTION_DAYS or 7)",
    )
    backup.add_argument("--json", action="store_true", help=json_help)
    backup.set_defaults(handler=_backup)
    backups = subparsers.add_parser("backups", help="list complete backups, oldest first")
    backups.add_argument("--target", help=target_help)
    backups.set_defaults(handler=_list)

    restore = subparsers.add_parser(
        "restore", help="restore a backup into empty stores and verify it against its manifest"
    )
    restore.add_argument("backup_id", metavar="BACKUP_ID")
    restore.add_argument("--target", help=target_help)
    restore.add_argument("--dry-run", action="store_true", help="check everything, change nothing")
    restore.add_argument("--json", action="store_true", help=json_help)
    restore.set_defaults(handler=_restore)

    doctor = subparsers.add_parser("doctor", help="check every configured dependency")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(handler=_doctor)
