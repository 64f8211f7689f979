"""A throwaway PostgreSQL cluster for the inbox tests: initdb in a temp dir, loopback only.

The cluster is real (Debian's `postgresql` package) and lives for the test session; each test
gets its own database. fsync is off in this cluster only to keep CREATE DATABASE fast: the
durability tests kill the receiver, not the server, so they prove the same thing either way.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL_HINT = "PostgreSQL server binaries not found: apt-get install postgresql"


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<ver>/bin, or wherever `initdb` is on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


@dataclass
class Cluster:
    host: str
    port: int

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres:secret-not-needed@{self.host}:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg2

        conn = psycopg2.connect(self.url())
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def new_database(self) -> str:
        name = "inbox_" + uuid.uuid4().hex[:12]
        self.admin(f"CREATE DATABASE {name}")
        return self.url(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(cmd: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


class ClusterUnavailable(RuntimeError):
    """No PostgreSQL server can be started here; the message says what to install."""


@contextlib.contextmanager
def throwaway_cluster(*, fsync: bool = False) -> Iterator[Cluster]:
    """initdb + pg_ctl start in a temp dir (as an unprivileged user when root); removed after.

    fsync=False (tests) keeps CREATE DATABASE fast; benchmarks pass fsync=True.
    """
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        raise ClusterUnavailable("psycopg2 not installed: pip install psycopg2-binary") from None
    bindir = find_bindir()
    if bindir is None:
        raise ClusterUnavailable(INSTALL_HINT)
    user = None
    if os.geteuid() == 0:  # initdb refuses root: run the server as an unprivileged account
        for name in ("postgres", "nobody"):
            try:
                pwd.getpwnam(name)
            except KeyError:
                continue
            user = name
            break
        else:
            raise ClusterUnavailable("running as root with no 'postgres' or 'nobody' account")
    root = Path(tempfile.mkdtemp(prefix="qpipe-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if user:
        entry = pwd.getpwnam(user)
        for path in (root, sock):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    port = _free_port()
    log = root / "server.log"
    try:
        subprocess.run(
            _as_owner(
                [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                 "--no-sync", "-E", "UTF8"],
                user,
            ),
            check=True, capture_output=True, text=True, timeout=120, cwd=root,
        )  # fmt: skip
        options = f"-k {sock} -p {port} -c listen_addresses=127.0.0.1 -c max_connections=60" + (
            "" if fsync else " -c fsync=off -c full_page_writes=off"
        )
        subprocess.run(
            _as_owner(
                [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                 "-o", options, "start"],
                user,
            ),
            check=True, capture_output=True, text=True, timeout=90, cwd=root,
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", "") or ""
        server_log = log.read_text()[-2000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL: {detail}\n{server_log}") from exc
    try:
        yield Cluster("127.0.0.1", port)
    finally:
        subprocess.run(
            _as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], user),
            capture_output=True, timeout=60, cwd=root,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    try:
        with throwaway_cluster() as cluster:
            yield cluster
    except ClusterUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def postgres_url(postgres_cluster: Cluster) -> str:
    """A fresh, empty database on the session's cluster."""
    return postgres_cluster.new_database()
