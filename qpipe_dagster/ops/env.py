"""Start-up validation of the environment: every problem in one message, each naming its variable.

Containers run `python -m qpipe_dagster.ops.env --role ROLE` before their service, so a missing
password or a typo in a cron string stops the container with a readable line instead of a stack
trace hours later. QPIPE_DEPLOY=prod makes the production variables required.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

ROLES = ("code-location", "webserver", "daemon", "receiver", "backup", "local")

_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$", re.ASCII)
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class EnvError(ValueError):
    """One or more environment variables are missing or invalid; the message lists each one."""


def _cron_values(text: str, lo: int, hi: int) -> set[int]:
    """The values a checked cron field selects (N-M with N > M wraps around, as croniter does)."""
    values: set[int] = set()
    for part in text.split(","):
        span, _, step = part.partition("/")
        if span == "*":
            a, b = lo, hi
        elif "-" in span:
            a, b = (int(x) for x in span.split("-"))
        else:
            a = int(span)
            b = hi if step else a
        every = int(step or 1)
        if a <= b:
            values.update(range(a, b + 1, every))
        else:
            values.update(x for x in [*range(a, hi + 1), *range(lo, b + 1)][::every])
    return values


def cron_problem(expr: str) -> str | None:
    """Why a 5-field cron string is invalid, or None (supports *, lists, ranges, steps).

    Also refused: a step of 0 (Dagster refuses the schedule at load, without naming the
    variable) and a day that no selected month has (31 4 = April 31st: the schedule loads but
    never fires).
    """
    fields = expr.split()
    if len(fields) != 5:
        return f"has {len(fields)} fields; a cron string has 5 (minute hour day month weekday)"
    for text, (lo, hi), what in zip(
        fields, _CRON_RANGES, ("minute", "hour", "day", "month", "weekday"), strict=True
    ):
        if not _CRON_FIELD.match(text):
            return f"{what} field {text!r} is not *, N, N-M, */S or a list of those"
        for num in re.findall(r"(?<![/\d])\d+", text, re.ASCII):
            if not lo <= int(num) <= hi:
                return f"{what} field {text!r}: {num} is outside {lo}-{hi}"
        if re.search(r"/0*(,|$)", text):
            return f"{what} field {text!r}: a step of 0 selects nothing"
    day, month, weekday = fields[2], fields[3], fields[4]
    if weekday == "*" and day != "*":  # with both restricted, cron fires on either
        days = _cron_values(day, 1, 31)
        months = sorted(_cron_values(month, 1, 12))
        if days and months and min(days) > max(_DAYS_IN_MONTH[m - 1] for m in months):
            return (
                f"day field {day!r} never occurs in month field {month!r}: the schedule would "
                "never run"
            )
    return None


_ASCII_WHOLE = re.compile(r"[0-9]{1,15}")  # str.isdigit() also passes '²' and '٣', int() not


def whole(v: str) -> int | None:
    """`v` as a whole number written in ASCII digits (up to 15 of them), else None.

    The runtime readers (the sensor's daily cap, the report, the schedules) share this rule
    with the start-up check, so no value passes one and fails the other.
    """
    text = v.strip()
    return int(text) if _ASCII_WHOLE.fullmatch(text) else None


def _int(lo: int) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        n = whole(v)
        if n is None or n < lo:
            return f"must be a whole number >= {lo}"
        return None

    return check


MAX_HOURS = 1_000_000.0  # about 114 years: longer windows are "never" and overflow timedelta


def hours_problem(v: str, lo: float) -> str | None:
    """Why `v` is not a finite number of hours from `lo` to MAX_HOURS, or None."""
    try:
        value = float(v)
    except ValueError:
        value = math.nan
    if not lo <= value <= MAX_HOURS:  # also false for nan; inf is above MAX_HOURS
        return f"must be a number >= {lo:g} and <= {MAX_HOURS:.0f} (hours)"
    return None


def _url(*schemes: str) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        p = urlsplit(v.strip())
        if p.scheme not in schemes or not (p.netloc or p.path):
            return f"must be a {'/'.join(schemes)} URL"
        return None

    return check


def _receiver(name: str) -> Callable[[str], str | None]:
    """The receiver's own rule for `name` (webhook_sensor.settings), so the start-up check
    passes exactly what the receiver will accept (it used to let 'inf' and 'http:///x' by)."""

    def check(v: str) -> str | None:
        from webhook_sensor.settings import Settings, SettingsError

        try:
            Settings.from_env({name: v})
        except SettingsError as exc:
            text = str(exc)
            prefix = f"{name}={v!r} "
            text = text[len(prefix) :] if text.startswith(prefix) else text
            return text.removeprefix("is invalid: ").removeprefix("is ")
        return None

    return check


def _choice(*options: str) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        return None if v.strip() in options else f"must be one of {', '.join(options)}"

    return check


def _weaviate_url(v: str) -> str | None:
    from qpipe_dagster.store.objects import VectorStoreError
    from qpipe_dagster.store.weaviate import parse_weaviate_url

    try:  # the store's own parser: what passes here connects, what fails here would not
        parse_weaviate_url(v)
    except VectorStoreError:
        return "must be an http/https URL with a host (and a port from 1 to 65535), e.g. http://weaviate:8080"
    return None


def _asset_url(v: str) -> str | None:
    parts = urlsplit(v)  # keys and endpoint are checked by the bucket on first use
    if parts.scheme not in ("s3", "r2") or not parts.netloc:
        return "must be s3://bucket/prefix or r2://bucket/prefix (a local folder: QPIPE_ASSET_DIR)"
    return None


def _device(v: str) -> str | None:
    from qpipe_dagster.embed.encoder import EmbeddingError, normalize_device

    try:  # the encoder's own rule, so a value passing here is never refused at load
        normalize_device(v)
    except EmbeddingError:
        return "must be one of auto, cpu, cuda, cuda:N"
    return None


def _private_addresses(v: str) -> str | None:
    from qpipe_dagster.settings import SettingError, crawl_private_addresses_allowed

    try:  # the crawl asset's own rule
        crawl_private_addresses_allowed({"QPIPE_CRAWL_PRIVATE_ADDRESSES": v})
    except SettingError:
        return "must be allow or refuse"
    return None


def _whole(lo: int, hi: int) -> Callable[[str], str | None]:
    from qpipe_dagster.settings import whole_number

    def check(v: str) -> str | None:
        try:
            whole_number(v, lo, hi)
        except ValueError as exc:
            return str(exc)
        return None

    return check


def _cron(v: str) -> str | None:
    return cron_problem(v)


def _symbol(v: str) -> str | None:
    from qpipe_dagster.settings import SettingError, default_symbol

    try:
        default_symbol({"QPIPE_DEFAULT_SYMBOL": v})
    except SettingError:
        return "must be a market symbol like BTC-USD or AAPL (letters and digits, one - or /)"
    return None


def _concepts_url(v: str) -> str | None:
    from qpipe_dagster.concepts import RegistryError
    from qpipe_dagster.concepts.postgres import ENV_VAR, concepts_url_from_env

    try:  # the registry's own rule
        concepts_url_from_env({ENV_VAR: v})
    except RegistryError as exc:
        return str(exc).split(": ", 1)[-1] if str(exc).startswith(ENV_VAR) else str(exc)
    return None


def _absolute(v: str) -> str | None:
    return None if os.path.isabs(v.strip()) else "must be an absolute path"


# Optional everywhere: checked only when set.
FORMATS: dict[str, Callable[[str], str | None]] = {
    "DAGSTER_HOME": _absolute,
    "QPIPE_DEPLOY": _choice("local", "prod"),
    "MAX_CONCEPTS_PER_DAY": _int(0),
    "QSTASH_DAILY_LIMIT": _int(1),
    "QPIPE_RECRAWL_CRON": _cron,
    "QPIPE_BACKUP_CRON": _cron,
    "QPIPE_REPORT_CRON": _cron,
    "QPIPE_RECRAWL_MAX_AGE_HOURS": lambda v: hours_problem(v, 0.01),
    "QPIPE_RECRAWL_MAX_PER_TICK": _int(1),
    "QPIPE_BACKUP_RETENTION_DAYS": _int(1),
    "QPIPE_EMBED_DEVICE": _device,
    "QPIPE_EMBED_TRUNCATE_DIM": _whole(1, 65_536),
    "QPIPE_ALLOW_MODEL_DOWNLOAD": _choice("0", "1"),
    "QPIPE_BACKEND": _choice("auto", "cpu", "gpu"),
    "QPIPE_DEFAULT_SYMBOL": _symbol,
    "QPIPE_CRAWL_PRIVATE_ADDRESSES": _private_addresses,
    "WEAVIATE_URL": _weaviate_url,
    "WEAVIATE_GRPC_PORT": _whole(1, 65_535),
    "WEAVIATE_BACKUP_BACKEND": _choice("filesystem", "s3", "gcs", "azure"),
    "BACKUP_URL": lambda v: (
        None
        if urlsplit(v).scheme in ("", "file", "s3", "r2")
        else "must be a path, file://, s3:// or r2:// URL"
    ),
    "BACKUP_S3_ENDPOINT": _url("http", "https"),
    "QPIPE_ASSET_URL": _asset_url,
    "QPIPE_ASSET_S3_ENDPOINT": _url("http", "https"),
    "QPIPE_RECEIVER_URL": _receiver("QPIPE_RECEIVER_URL"),
    "DAGSTER_PG_PORT": _whole(1, 65_535),
    "QPIPE_CONCEPTS_URL": _concepts_url,
    "QPIPE_RECEIVER_RATE_LIMIT": _receiver("QPIPE_RECEIVER_RATE_LIMIT"),
    "QPIPE_RECEIVER_CLOCK_TOLERANCE_S": _receiver("QPIPE_RECEIVER_CLOCK_TOLERANCE_S"),
    "QPIPE_RECEIVER_MAX_BODY_BYTES": _receiver("QPIPE_RECEIVER_MAX_BODY_BYTES"),
}

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
    env = os.environ if env is None else env
    if role not in ROLES:
        return [f"role {role!r} is not one of {', '.join(ROLES)}"]
    problems = []
    deploy = env.get("QPIPE_DEPLOY", "").strip() or "local"
    if deploy == "prod":
        for name in PROD_REQUIRED[role]:
            if not env.get(name, "").strip():
                why = _DESCRIPTIONS.get(name, "")
                problems.append(f"{name} is missing (QPIPE_DEPLOY=prod, role {role}): {why}")
    for name, check in FORMATS.items():
        raw = env.get(name)
        if raw is None or not raw.strip():
            continue
        why = check(raw.strip())
        if why:
            problems.append(f"{name}={raw!r} is invalid: {why}")
    if (
        env.get("QPIPE_EMBED_TRUNCATE_DIM", "").strip()
        and not env.get("QPIPE_EMBED_MODEL", "").strip()
    ):
        problems.append(
            "QPIPE_EMBED_TRUNCATE_DIM is set but QPIPE_EMBED_MODEL is not: the truncation "
            "applies to a pinned model only"
        )
    r2 = [v for v in ("R2_ACCOUNT_ID", "R2_KEY", "R2_SECRET") if env.get(v, "").strip()]
    if r2 and len(r2) < 3:
        missing = sorted({"R2_ACCOUNT_ID", "R2_KEY", "R2_SECRET"} - set(r2))
        problems.append(
            f"{', '.join(missing)} missing: R2 backups need all of R2_ACCOUNT_ID, R2_KEY, R2_SECRET"
        )
    if (
        len(r2) == 3
        and not env.get("BACKUP_URL", "").strip()
        and not env.get("R2_BUCKET", "").strip()
    ):
        problems.append("R2_BUCKET is missing: R2 credentials are set but no bucket is named")
    if (
        env.get("QSTASH_NEXT_SIGNING_KEY", "").strip()
        and not env.get("QSTASH_CURRENT_SIGNING_KEY", "").strip()
        and not any(p.startswith("QSTASH_CURRENT_SIGNING_KEY is missing") for p in problems)
    ):
        problems.append(
            "QSTASH_CURRENT_SIGNING_KEY is missing while QSTASH_NEXT_SIGNING_KEY is set"
        )
    from webhook_sensor.settings import SettingsError, inbox_url_from_env

    try:
        inbox_url_from_env(env)
    except SettingsError as exc:
        problems.append(str(exc))
    return problems


def check_env(role: str, env: Mapping[str, str] | None = None) -> None:
    """Raise EnvError listing every problem (used at start-up of each service)."""
    problems = env_problems(role, env)
    if problems:
        raise EnvError(f"environment is not valid for {role}:\n  - " + "\n  - ".join(problems))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qpipe_dagster.ops.env", description=(__doc__ or "").partition("\n")[0]
    )
    parser.add_argument("--role", choices=ROLES, required=True)
    args = parser.parse_args(argv)
    try:
        check_env(args.role)
    except EnvError as exc:
        print(f"qpipe: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
