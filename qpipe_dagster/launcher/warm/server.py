"""The warm worker: one process that holds the code location and the embedding model, and forks a
run worker per run.

A cold run worker (`dagster api execute_run`, what the default launcher starts) spends most of a
small concept's CPU before any work: the interpreter, Dagster, the code location, torch and the
model, again for every run. Here that happens once; each run is a fork that shares those pages
copy-on-write and only does its own steps. A forked child runs exactly what `dagster api
execute_run` runs (its command body, with the same interrupt handling), so runs, events, retries
and cancellation behave as with the default launcher.

What must not happen before a fork: threads, an OpenMP or numba thread pool. torch loads the
model with one intra-op thread (no OpenMP team in the parent) and gets its own count back in the
child; numba kernels stay unrun here (their on-disk cache loads in well under a second in the
child). The server checks it is single-threaded before every fork and refuses otherwise.

Protocol, on an abstract Unix socket (see ``client``): the launcher sends one JSON line
``{"run_id", "instance_ref", "executable", "module"}``; the reply is ``{"pid", "created"}`` of the
forked run worker, or ``{"error"}`` naming why this server cannot run it. The server exits when
idle for ``--idle-timeout`` seconds with no run worker alive, or when its parent (the process
that launched it) is gone. When the code it loaded changed on disk (a code reload in `dagster
dev`) or the state its definitions bound did (``warm_key()``), it retires: it closes its socket
at once, so the next run starts a fresh worker, and exits when its own runs end.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qpipe_dagster.launcher.warm.client import code_fingerprint, read_message

ACCEPT_POLL_S = 1.0
STALE_CHECK_S = 5.0  # an idle worker notices changed code or state this often (each run checks)
# Threads that may exist at a fork: their library restarts them in the child (os.register_at_fork)
# and they are idle here (nothing has run on them).
FORK_AWARE_THREADS = frozenset({"LanceDBBackgroundEventLoop"})


@dataclass(frozen=True)
class Preloaded:
    """What the preload leaves for the forks: torch's thread count and the state key."""

    torch_threads: int
    key: Callable[[], str]  # the code location's `warm_key()`, or a constant
    loaded_key: str  # its value when the code location was loaded


def preload(module: str) -> Preloaded:
    """Import the code location, build its repository and call its ``warm_up()`` if it has one.

    A code location's definitions may depend on state besides code and environment (qpipe's:
    the active embedding model, bound into the resources when definitions load). It names that
    state with ``warm_key()``; a run is forked only while the key is unchanged.
    """
    threads = 0
    try:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # no OpenMP team before a fork
    except ImportError:
        pass
    import dagster._cli.api  # noqa: F401  the run worker's own command body

    from qpipe_dagster.launcher.warm import patches

    patches.apply()
    definitions = importlib.import_module(module)
    defs = getattr(definitions, "defs", None)
    if defs is not None and hasattr(defs, "get_repository_def"):
        defs.get_repository_def()
    try:
        from tqdm import tqdm

        tqdm.monitor_interval = 0  # no monitor thread for the weights' progress bar
    except ImportError:
        pass
    # lancedb warns in every forked child that its fork support is experimental: the risk it
    # names is a fork while its loop is busy, and nothing runs on it here
    warnings.filterwarnings("ignore", "lancedb fork support", RuntimeWarning)
    warm_up = getattr(definitions, "warm_up", None)
    if callable(warm_up):
        warm_up()  # the code location's own heavy loads (qpipe: the embedding model)
    found = getattr(definitions, "warm_key", None)

    def key() -> str:
        return str(found()) if callable(found) else ""

    return Preloaded(threads, key, key())


def run_worker(run_id: str, instance_ref_json: str, torch_threads: int) -> int:
    """In the forked child: execute the run as `dagster api execute_run` does; the exit code."""
    from dagster import DagsterInstance
    from dagster._cli.api import execute_run_command
    from dagster._core.instance.ref import InstanceRef
    from dagster._core.origin import JobPythonOrigin
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import deserialize_value, serialize_value

    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    ref = deserialize_value(instance_ref_json, InstanceRef)
    with DagsterInstance.from_ref(ref) as instance:
        run = instance.get_run_by_id(run_id)
        origin = run.job_code_origin if run else None
        if not isinstance(origin, JobPythonOrigin):
            print(f"qpipe warm worker: run {run_id} has no Python origin", file=sys.stderr)
            return 1
    args = ExecuteRunArgs(job_origin=origin, run_id=run_id, instance_ref=ref)
    try:
        execute_run_command.callback(  # type: ignore[misc]
            input_json=serialize_value(args), compressed_input_json=None
        )
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 1
    return 0


class Server:
    """Accepts run requests and forks a run worker for each (see the module docstring)."""

    def __init__(
        self,
        listener: socket.socket,
        *,
        module: str,
        fingerprint: str,
        idle_timeout: float,
        preloaded: Preloaded,
    ) -> None:
        self.listener = listener
        self.module = module
        self.fingerprint = fingerprint
        self.idle_timeout = idle_timeout
        self.preloaded = preloaded
        self.parent = os.getppid()
        self.children: set[int] = set()
        self.last_activity = time.monotonic()
        self.stopping = False
        self.retired = ""  # why it stopped taking runs; its name is free for a fresh worker

    def reap(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
            self.children.discard(pid)
            self.last_activity = time.monotonic()

    def stale(self) -> str:
        """Why runs forked now would not run what a fresh run worker would, or ''."""
        if code_fingerprint(self.module) != self.fingerprint:
            return "the code changed on disk since this warm worker loaded it"
        if self.preloaded.key() != self.preloaded.loaded_key:
            return (
                f"the code location's state changed since this warm worker loaded it "
                f"({self.preloaded.loaded_key!r} -> {self.preloaded.key()!r})"
            )
        return ""

    def retire(self, why: str) -> None:
        """Take no more runs and free the socket's name; exit once the forked runs end."""
        if not self.retired:
            self.retired = why
            self.listener.close()

    def why_stop(self) -> str | None:
        """Why to stop now (only ever with no run worker alive), or None."""
        if self.children:
            return None
        if self.retired or self.stopping:
            return self.retired or "asked to stop"
        if os.getppid() != self.parent:
            return "its launcher is gone"
        if time.monotonic() - self.last_activity > self.idle_timeout:
            return f"idle for {self.idle_timeout:.0f}s"
        return None

    def serve(self) -> str:
        self.listener.settimeout(ACCEPT_POLL_S)
        checked = time.monotonic()
        while True:
            self.reap()
            reason = self.why_stop()
            if reason:
                return reason
            if self.retired:
                time.sleep(ACCEPT_POLL_S)
                continue
            if time.monotonic() - checked > STALE_CHECK_S:
                checked = time.monotonic()
                why = self.stale()
                if why:
                    self.retire(why)
                    continue
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, InterruptedError):
                continue
            with conn:
                self.last_activity = time.monotonic()
                conn.settimeout(30)
                try:
                    reply = self.handle(read_message(conn), conn)
                except (OSError, ValueError) as exc:
                    reply = {"error": f"bad request: {exc}"}
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    def handle(self, request: dict[str, Any], conn: socket.socket) -> dict[str, Any]:
        run_id, ref = request.get("run_id"), request.get("instance_ref")
        if not isinstance(run_id, str) or not isinstance(ref, str):
            return {"error": "request needs run_id and instance_ref strings"}
        if request.get("executable") != sys.executable or request.get("module") != self.module:
            return {
                "error": f"this warm worker runs {self.module} with {sys.executable}; run "
                f"{run_id} needs {request.get('module')} with {request.get('executable')}"
            }
        why = self.retired or ("asked to stop" if self.stopping else self.stale())
        if why:
            self.retire(why)
            return {"error": why}
        extra = [
            t.name
            for t in threading.enumerate()
            if t is not threading.main_thread() and t.name not in FORK_AWARE_THREADS
        ]
        if extra:
            return {"error": f"warm worker has threads ({', '.join(extra)}); cannot fork safely"}
        pid = os.fork()
        if pid == 0:  # the run worker
            code = 1
            try:
                self.listener.close()
                conn.close()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                code = run_worker(run_id, ref, self.preloaded.torch_threads)
            except BaseException as exc:  # nothing may return into the server's loop
                print(f"qpipe warm worker: run {run_id}: {exc!r}", file=sys.stderr)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        self.children.add(pid)
        import psutil

        return {"pid": pid, "created": psutil.Process(pid).create_time()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qpipe_dagster.launcher.warm.server")
    parser.add_argument("--name", required=True, help="abstract socket name (from the client)")
    parser.add_argument("--module", required=True, help="the code location's Python module")
    parser.add_argument("--fingerprint", required=True, help="the code's fingerprint at launch")
    parser.add_argument("--idle-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind("\0" + args.name)  # claims the name before the slow part
    except OSError:
        return 0  # another launch started the same warm worker first
    listener.listen(64)
    started = time.monotonic()
    server = Server(
        listener,
        module=args.module,
        fingerprint=args.fingerprint,
        idle_timeout=args.idle_timeout,
        preloaded=preload(args.module),
    )

    def on_term(_signum: int, _frame: object) -> None:
        server.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    print(
        f"qpipe warm worker {os.getpid()} ready for {args.module} in "
        f"{time.monotonic() - started:.1f}s",
        file=sys.stderr,
        flush=True,
    )
    reason = server.serve()
    print(f"qpipe warm worker {os.getpid()} stops: {reason}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
