"""Start-up validation of the environment: every problem in one message, each naming its variable.

Containers run `python -m qpipe_dagster.ops.env --role ROLE` before their service, so a missing
password or a typo in a cron string stops the container with a readable line instead of a stack
trace hours later. QPIPE_DEPLOY=prod makes the production variables required.

This module holds only which variables each role needs (and the rules that tie two variables
together); every value is parsed by `qpipe_dagster.settings`, the parsers the services use.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from qpipe_dagster.settings import FORMATS, SettingError, env_value, inbox_url

ROLES = ("code-location", "webserver", "daemon", "receiver", "backup", "local")

# Required per role in production (QPIPE_DEPLOY=prod).
_PG = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USER",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
)
PROD_REQUIRED: dict[str, tuple[str, ...]] = {
    # WEAVIATE_URL is optional: unset, the code location uses the local LanceDB store on its
    # volume (QPIPE_LANCE_PATH), as on a laptop.
    "code-location": ("DAGSTER_HOME", *_PG),
    "webserver": ("DAGSTER_HOME", *_PG),
    "daemon": ("DAGSTER_HOME", *_PG),
    "receiver": (
        "DAGSTER_HOME",
        *_PG,
        "QSTASH_CURRENT_SIGNING_KEY",
        "QSTASH_NEXT_SIGNING_KEY",
        "QPIPE_RECEIVER_URL",
    ),
    "backup": ("DAGSTER_HOME",),
    "local": (),
}
_DESCRIPTIONS = {
    "DAGSTER_HOME": "the instance directory holding dagster.yaml",
    "DAGSTER_PG_HOST": "Postgres host for Dagster's run/event storage",
    "DAGSTER_PG_PORT": "Postgres port read by deploy/dagster.prod.yaml (5432 for the compose service)",
    "DAGSTER_PG_USER": "Postgres user",
    "DAGSTER_PG_PASSWORD": "Postgres password",
    "DAGSTER_PG_DB": "Postgres database name",
    "QSTASH_CURRENT_SIGNING_KEY": "copy it from the Upstash console (QStash > Signing Keys); "
    "production refuses to start without it (the public dev key is used only outside prod)",
    "QSTASH_NEXT_SIGNING_KEY": "copy it from the Upstash console (QStash > Signing Keys; key "
    "rotation); production refuses to start without it",
    "QPIPE_RECEIVER_URL": "the public URL QStash delivers to (signatures are bound to it)",
}


def env_problems(role: str, env: Mapping[str, str] | None = None) -> list[str]:
    """Every problem with the environment for `role`, one line each, naming the variable."""
    env = os.environ if env is None else env  # read through env_value below, as everywhere
    if role not in ROLES:
        return [f"role {role!r} is not one of {', '.join(ROLES)}"]
    problems = []
    if env_value("QPIPE_DEPLOY", env) == "prod":
        for name in PROD_REQUIRED[role]:
            if env_value(name, env) is None:
                why = _DESCRIPTIONS.get(name, "")
                problems.append(f"{name} is missing (QPIPE_DEPLOY=prod, role {role}): {why}")
    for name, check in FORMATS.items():
        value = env_value(name, env)
        why = None if value is None else check(value)
        if why:
            problems.append(f"{name}={env[name]!r} is invalid: {why}")
    if env_value("QPIPE_EMBED_TRUNCATE_DIM", env) and not env_value("QPIPE_EMBED_MODEL", env):
        problems.append(
            "QPIPE_EMBED_TRUNCATE_DIM is set but QPIPE_EMBED_MODEL is not: the truncation "
            "applies to a pinned model only"
        )
    r2 = [v for v in ("R2_ACCOUNT_ID", "R2_KEY", "R2_SECRET") if env_value(v, env)]
    if r2 and len(r2) < 3:
        missing = sorted({"R2_ACCOUNT_ID", "R2_KEY", "R2_SECRET"} - set(r2))
        problems.append(
            f"{', '.join(missing)} missing: R2 backups need all of R2_ACCOUNT_ID, R2_KEY, R2_SECRET"
        )
    if len(r2) == 3 and not env_value("BACKUP_URL", env) and not env_value("R2_BUCKET", env):
        problems.append("R2_BUCKET is missing: R2 credentials are set but no bucket is named")
    if (
        env_value("QSTASH_NEXT_SIGNING_KEY", env)
        and not env_value("QSTASH_CURRENT_SIGNING_KEY", env)
        and not any(p.startswith("QSTASH_CURRENT_SIGNING_KEY is missing") for p in problems)
    ):
        problems.append(
            "QSTASH_CURRENT_SIGNING_KEY is missing while QSTASH_NEXT_SIGNING_KEY is set"
        )
    try:  # its message redacts the password
        inbox_url(env)
    except SettingError as exc:
        problems.append(str(exc))
    return problems


def check_env(role: str, env: Mapping[str, str] | None = None) -> None:
    """Raise SettingError listing every problem (used at start-up of each service)."""
    problems = env_problems(role, env)
    if problems:
        raise SettingError(f"environment is not valid for {role}:\n  - " + "\n  - ".join(problems))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qpipe_dagster.ops.env", description=(__doc__ or "").partition("\n")[0]
    )
    parser.add_argument("--role", choices=ROLES, required=True)
    args = parser.parse_args(argv)
    try:
        check_env(args.role)
    except SettingError as exc:
        print(f"qpipe: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
