"""`qpipe doctor`: check every configured dependency and say, per line, what is wrong.

Each check returns ok / warn / fail / skip with a reason; only `fail` makes the command exit
non-zero. Unconfigured production pieces (Postgres, Weaviate, R2) are `skip`, not failures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from qpipe_dagster.paths import state_paths
from qpipe_dagster.settings import SettingError, env_int, env_secret, env_value, inbox_url

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str


CheckFn = Callable[[Mapping[str, str]], Check]


def check_env(env: Mapping[str, str]) -> Check:
    from qpipe_dagster.ops.env import env_problems

    role = "code-location"
    problems = env_problems(role, env)
    home = env_value("DAGSTER_HOME", env)
    if home and os.path.exists(home) and not os.path.isdir(home):
        # every store lives under it: name the cause once, not as each store's own failure
        problems.append(f"DAGSTER_HOME={home!r} is a file, not a folder")
    mode = env_value("QPIPE_DEPLOY", env) or "local"
    if problems:
        return Check("environment", FAIL, "; ".join(problems))
    return Check("environment", OK, f"QPIPE_DEPLOY={mode}, all set variables valid")


def check_vector_store(env: Mapping[str, str]) -> Check:
    url = env_value("WEAVIATE_URL", env)
    if url:
        import httpx

        headers = {}
        key = env_value("WEAVIATE_API_KEY", env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            r = httpx.get(url.rstrip("/") + "/v1/meta", headers=headers, timeout=5)
            r.raise_for_status()
            meta = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            return Check("vector store", FAIL, f"Weaviate {url}/v1/meta: {exc}")
        modules = ", ".join(sorted((meta.get("modules") or {}).keys())) or "none"
        backup = "backup module present" if "backup-" in modules else "NO backup module"
        status = OK if "backup-" in modules else WARN
        return Check("vector store", status, f"Weaviate {meta.get('version')} at {url}; {backup}")
    from qpipe_dagster.ops import snapshot

    path = state_paths(env).vectors
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():  # a file where the folder (or one of its parents) should be
        where = "it" if probe == path else probe
        return Check("vector store", FAIL, f"LanceDB path {path}: {where} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        return Check("vector store", FAIL, f"LanceDB path {path} is not writable")
    try:
        tables = snapshot.lance_tables(path)
        counts = {t: snapshot.lance_rows(path, t) for t in tables}
    except Exception as exc:  # a damaged table directory
        return Check("vector store", FAIL, f"LanceDB {path}: {type(exc).__name__}: {exc}")
    summary = ", ".join(f"{t}={n}" for t, n in counts.items()) or "empty"
    return Check("vector store", OK, f"LanceDB {path}: {summary}")


def check_inbox(env: Mapping[str, str]) -> Check:
    from webhook_sensor.inbox import InboxUnavailable, describe_target, open_inbox

    try:
        url = inbox_url(env)
    except SettingError as exc:
        return Check("inbox", FAIL, str(exc))
    target = url or state_paths(env).inbox
    where = describe_target(target)
    try:
        inbox = open_inbox(target)
        inbox.check_writable()
        return Check("inbox", OK, f"{where}: {inbox.depth()} pending of {inbox.count()}")
    except (InboxUnavailable, OSError) as exc:
        return Check("inbox", FAIL, f"{where}: {exc}")
    except Exception as exc:  # sqlite3/psycopg2 errors: locked, corrupt, refused
        return Check("inbox", FAIL, f"{where}: {type(exc).__name__}: {exc}")


def check_receiver(env: Mapping[str, str]) -> Check:
    """/health and /ready through QPIPE_RECEIVER_HEALTH_URL (an internal address such as
    http://receiver:8766; unreachable = FAIL), else the local port (QPIPE_RECEIVER_PORT, 8766;
    unreachable = WARN, the receiver may run elsewhere). The public QPIPE_RECEIVER_URL is only
    reported: a container often cannot reach its own public name (TLS proxy, hairpin NAT)."""
    import httpx

    public = env_value("QPIPE_RECEIVER_URL", env)
    note = f"; public URL {public} (QPIPE_RECEIVER_URL) not probed from here" if public else ""
    internal = env_value("QPIPE_RECEIVER_HEALTH_URL", env)
    if internal:
        p = urlsplit(internal)
        if p.scheme not in ("http", "https") or not p.hostname:
            return Check(
                "receiver",
                FAIL,
                f"QPIPE_RECEIVER_HEALTH_URL={internal!r} is not an http(s) URL with a host "
                "(e.g. http://receiver:8766)",
            )
        base = urlunsplit((p.scheme, p.netloc, "", "", ""))
    else:
        try:  # a bad value probes the default port; the receiver itself refuses it
            port = env_int("QPIPE_RECEIVER_PORT", 1, 65_535, env) or 8766
        except SettingError:
            port = 8766
        base = f"http://127.0.0.1:{port}"
    results = []
    for path in ("/health", "/ready"):
        try:
            r = httpx.get(base + path, timeout=5)
            results.append(f"{path} {r.status_code}" + ("" if r.is_success else f" {r.text[:120]}"))
            if not r.is_success:
                return Check("receiver", FAIL, f"{base}: " + ", ".join(results) + note)
        except httpx.HTTPError as exc:
            if internal:
                why = f"{base}{path} unreachable ({type(exc).__name__}; QPIPE_RECEIVER_HEALTH_URL)"
                return Check("receiver", FAIL, why + note)
            return Check(
                "receiver",
                WARN,
                f"{base}{path} unreachable ({type(exc).__name__}): not running here; set "
                "QPIPE_RECEIVER_HEALTH_URL to its internal address to check it" + note,
            )
    return Check("receiver", OK, f"{base}: " + ", ".join(results) + note)


def check_model(env: Mapping[str, str]) -> Check:
    """The model the pipeline and search actually use: QPIPE_EMBED_MODEL when pinned, else the
    one `qpipe reembed` made active (concepts.active_model_store: the PostgreSQL table shared
    through QPIPE_CONCEPTS_URL, or $DAGSTER_HOME/qpipe/active_model.json), else the default."""
    from qpipe_dagster.concepts import active_model_store
    from qpipe_dagster.concepts.postgres import PostgresActiveModel
    from qpipe_dagster.embed.encoder import resolve_model
    from qpipe_dagster.embed.rotation import active_model

    pinned = env_value("QPIPE_EMBED_MODEL", env) is not None
    try:
        choice = active_model(env)
        store = None if pinned else active_model_store(env)
        recorded = store.get() if store is not None else None
    except ValueError as exc:  # SettingError included: names the variable, the file or table
        return Check("embedding model", FAIL, str(exc))
    name = choice.name
    shown = f"{name}@{choice.truncate_dim}" if choice.truncate_dim else name  # as search uses it
    if pinned:
        source = "QPIPE_EMBED_MODEL"
    elif store is not None and recorded is not None:
        shared = isinstance(store, PostgresActiveModel)
        source = "active since qpipe reembed" + (f", shared in {store.where}" if shared else "")
    else:
        source = "default"
    try:
        resolved = resolve_model(name)
    except Exception as exc:
        return Check("embedding model", FAIL, f"{shown} ({source}): {exc}")
    local = Path(resolved).is_dir()
    if local:
        return Check("embedding model", OK, f"{shown} ({source}) -> {resolved}")
    if env_value("QPIPE_ALLOW_MODEL_DOWNLOAD", env) == "1":
        return Check("embedding model", WARN, f"{shown} ({source}) will be downloaded on first use")
    return Check(
        "embedding model",
        FAIL,
        f"{shown} ({source}) is not a local model and QPIPE_ALLOW_MODEL_DOWNLOAD is not 1",
    )


def check_gpu(env: Mapping[str, str]) -> Check:
    """CUDA via torch (embeddings), CuPy (backtests), device count/memory, validator backend."""
    parts = []
    try:
        import torch

        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            mems = []
            for i in range(n):
                free, total = torch.cuda.mem_get_info(i)
                mems.append(
                    f"{torch.cuda.get_device_name(i)} {free / 2**30:.1f}/{total / 2**30:.1f} GiB free"
                )
            parts.append(f"torch CUDA {torch.version.cuda}: {n} device(s) [{'; '.join(mems)}]")
        else:
            parts.append(f"torch {torch.__version__}: no CUDA (build cuda={torch.version.cuda})")
    except Exception as exc:
        parts.append(f"torch: {type(exc).__name__}: {exc}")
    from qpipe_dagster.backtest.engine import choose_backend, gpu_status

    name, reason = gpu_status()
    parts.append(f"CuPy: {name}" if name else f"CuPy: {reason}")
    try:
        backend, why = choose_backend("auto")
    except (RuntimeError, ValueError) as exc:
        return Check("gpu", FAIL, "; ".join(parts) + f"; validator: {exc}")
    parts.append(
        f"validator backend: {backend}" + (f" ({why.split('(')[0].strip()})" if why else "")
    )
    wants_gpu = env_value("QPIPE_BACKEND", env) == "gpu" or (
        env_value("QPIPE_EMBED_DEVICE", env) or ""
    ).startswith("cuda")
    status = FAIL if wants_gpu and backend != "gpu" else OK
    return Check("gpu", status, "; ".join(parts))


def check_backup_target(env: Mapping[str, str]) -> Check:
    from qpipe_dagster.ops.manifest import BackupError
    from qpipe_dagster.ops.targets import LocalTarget, S3Target, target_from_env

    try:
        target = target_from_env(None, env)
        if isinstance(target, LocalTarget | S3Target):
            target.check()
        ids = target.list_ids()
    except (BackupError, OSError) as exc:
        return Check("backup target", FAIL, str(exc))
    latest = ids[-1] if ids else "none yet"
    return Check("backup target", OK, f"{target.url}: {len(ids)} backup(s), latest {latest}")


def check_postgres(env: Mapping[str, str]) -> Check:
    host = env_value("DAGSTER_PG_HOST", env)
    if not host:
        return Check("postgres", SKIP, "DAGSTER_PG_HOST unset: local SQLite instance storage")
    try:
        import psycopg2
    except ImportError:
        return Check("postgres", FAIL, "psycopg2 missing: install qpipe[prod]")
    try:
        pg_port = env_int("DAGSTER_PG_PORT", 1, 65_535, env) or 5432
    except SettingError:
        shown = env_value("DAGSTER_PG_PORT", env)
        return Check("postgres", FAIL, f"DAGSTER_PG_PORT={shown!r} is not a port (1-65535)")
    try:
        conn = psycopg2.connect(
            host=host,
            port=pg_port,
            user=env_value("DAGSTER_PG_USER", env),
            password=env_secret("DAGSTER_PG_PASSWORD", env),
            dbname=env_value("DAGSTER_PG_DB", env),
            connect_timeout=5,
        )
        conn.close()
    except Exception as exc:
        return Check("postgres", FAIL, f"{host}: {str(exc).strip().splitlines()[0]}")
    return Check("postgres", OK, f"{host}/{env_value('DAGSTER_PG_DB', env)} reachable")


def check_breakers(env: Mapping[str, str]) -> Check:
    """The circuit breaker of each outside system, as every qpipe process on this host shares it
    (an open one means that system failed FAIL_MAX calls in a row, retries included)."""
    from qpipe_dagster.monitoring.state import SYSTEMS
    from qpipe_dagster.resilience.breakers import breaker_db, by_system, read_states
    from qpipe_dagster.resilience.guard import describe

    stored = by_system(read_states(breaker_db(env)))
    parts, status = [], OK
    for system in sorted({*SYSTEMS, *stored}):
        found = stored.get(system)
        state = found.state if found else "closed"
        parts.append(
            f"{system} {describe(state, found.opened_at, found.fail_counter) if found else 'closed'}"
        )
        if state == "open":
            status = FAIL
        elif state == "half-open" and status == OK:
            status = WARN
    return Check("circuit breakers", status, "; ".join(parts))


def check_disk(env: Mapping[str, str]) -> Check:
    """Each state path's filesystem against QPIPE_DISK_WARN_PERCENT (default 85, the alert's
    threshold) and QPIPE_DISK_FAIL_PERCENT (default 95), with what each path itself holds."""
    from qpipe_dagster.monitoring.state import filesystem_usage, state_paths, tree_bytes

    warn = env_int("QPIPE_DISK_WARN_PERCENT", 1, 100, env) or 85
    fail = env_int("QPIPE_DISK_FAIL_PERCENT", 1, 100, env) or 95
    status, parts = OK, []
    for name, path in sorted(state_paths(env).items()):
        usage = filesystem_usage(path)
        if usage is None or usage[1] == 0:
            parts.append(f"{name}: filesystem unreadable")
            status = WARN if status == OK else status
            continue
        pct = 100.0 * usage[0] / usage[1]
        held = tree_bytes(path) / 2**20 if name != "dagster_home" else None
        parts.append(
            f"{name} {pct:.0f}% used" + (f" ({held:.0f} MiB here)" if held is not None else "")
        )
        if pct >= fail:
            status = FAIL
        elif pct >= warn and status == OK:
            status = WARN
    return Check("disk", status, f"warn at {warn}%, fail at {fail}%: " + "; ".join(parts))


DEFAULT_CHECKS: tuple[CheckFn, ...] = (
    check_env,
    check_postgres,
    check_vector_store,
    check_inbox,
    check_receiver,
    check_model,
    check_gpu,
    check_backup_target,
    check_breakers,
    check_disk,
)


def run_checks(checks: Sequence[CheckFn], env: Mapping[str, str] | None = None) -> list[Check]:
    """Run each check; a crashing check is itself reported as a failure, never a traceback."""
    env = os.environ if env is None else env
    results = []
    for fn in checks:
        try:
            results.append(fn(env))
        except Exception as exc:
            name = fn.__name__.removeprefix("check_").replace("_", " ")
            results.append(Check(name, FAIL, f"check crashed: {type(exc).__name__}: {exc}"))
    return results


def format_table(results: Sequence[Check]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'CHECK'.ljust(width)}  STATUS  DETAIL"]
    for r in results:
        lines.append(f"{r.name.ljust(width)}  {r.status.upper().ljust(6)}  {r.detail}")
    return "\n".join(lines)
