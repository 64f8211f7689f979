"""Find or start the warm worker for a code location, and ask it to fork a run worker.

One warm worker per (DAGSTER_HOME, Python executable, module, code fingerprint): the name of its
abstract Unix socket is a hash of the four, so a changed file under the module's package gives
a new name, hence a fresh worker, and two instances never share one. Abstract sockets vanish
with their process: nothing is left on disk to go stale.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVER_MODULE = "qpipe_dagster.launcher.warm.server"
CONNECT_POLL_S = 0.05

_started: dict[str, subprocess.Popen[bytes]] = {}


class WarmWorkerError(RuntimeError):
    """The warm worker could not take the run; the message says why (the run goes cold)."""


@dataclass(frozen=True)
class Forked:
    """A run worker forked by the warm worker: its pid and creation time (its identity)."""

    pid: int
    created: float
    server: str


def package_dir(module: str) -> Path | None:
    """The folder of ``module``'s top-level package, found without importing it."""
    spec = importlib.util.find_spec(module.split(".")[0])
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def code_fingerprint(module: str) -> str:
    """Every .py file under the module's package: path, size and mtime, hashed."""
    root = package_dir(module)
    digest = hashlib.sha256(module.encode())
    if root is None:
        return digest.hexdigest()[:16]
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                stat = os.stat(os.path.join(folder, name))
                digest.update(f"{folder}/{name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def server_name(home: str, module: str, fingerprint: str) -> str:
    key = "\0".join((os.path.realpath(home), sys.executable, module, fingerprint))
    return "qpipe-warm-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def read_message(sock: socket.socket, limit: int = 1 << 20) -> dict[str, Any]:
    """One JSON object sent as one line (the protocol both sides speak); ValueError otherwise."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ValueError("message too long")
    value = json.loads(data.decode() or "null")
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object: {data[:200]!r}")
    return value


def _connect(name: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect("\0" + name)
    except (ConnectionRefusedError, FileNotFoundError):
        sock.close()
        return None
    return sock


def _start(name: str, module: str, fingerprint: str, cwd: str, idle_timeout: float) -> None:
    for other in [n for n, proc in _started.items() if proc.poll() is not None]:
        del _started[other]
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", SERVER_MODULE, "--name", name, "--module", module),
            *("--fingerprint", fingerprint, "--idle-timeout", str(idle_timeout)),
        ],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )
    _started[name] = proc
    # reaped the moment it exits (idle, retired), not left a zombie until the next start
    threading.Thread(target=proc.wait, name=f"reap-{name}", daemon=True).start()


def start_for(home: str, module: str, cwd: str, *, idle_timeout: float) -> bool:
    """Start the warm worker for ``module`` under ``home`` unless one answers; True if started.

    `make run` calls it once the stack is up, so the first concept does not wait for the load;
    the worker is then the caller's child and stops with it.
    """
    name = server_name(home, module, code_fingerprint(module))
    sock = _connect(name)
    if sock is not None:
        sock.close()
        return False
    _start(name, module, code_fingerprint(module), cwd, idle_timeout)
    return True


def connect_or_start(
    home: str, module: str, cwd: str, *, idle_timeout: float, start_timeout: float
) -> tuple[socket.socket, str]:
    """A connection to the warm worker for ``module`` under ``home``, started when missing."""
    name = server_name(home, module, code_fingerprint(module))
    sock = _connect(name)
    if sock is not None:
        return sock, name
    _start(name, module, code_fingerprint(module), cwd, idle_timeout)
    deadline = time.monotonic() + start_timeout
    while time.monotonic() < deadline:
        sock = _connect(name)
        if sock is not None:
            return sock, name
        proc = _started.get(name)
        if proc is not None and proc.poll() is not None:
            raise WarmWorkerError(
                f"warm worker for {module} exited at start (code {proc.returncode})"
            )
        time.sleep(CONNECT_POLL_S)
    raise WarmWorkerError(
        f"warm worker for {module} did not open its socket in {start_timeout:.0f}s"
    )


def fork_run(
    run_id: str,
    instance_ref_json: str,
    *,
    home: str,
    module: str,
    executable: str,
    cwd: str,
    idle_timeout: float = 600.0,
    start_timeout: float = 180.0,
) -> Forked:
    """Have the warm worker fork a run worker for ``run_id``; WarmWorkerError when it cannot."""
    if executable != sys.executable:
        raise WarmWorkerError(
            f"the run's code location uses {executable}, this launcher {sys.executable}"
        )
    sock, name = connect_or_start(
        home, module, cwd, idle_timeout=idle_timeout, start_timeout=start_timeout
    )
    request = {
        "run_id": run_id,
        "instance_ref": instance_ref_json,
        "executable": executable,
        "module": module,
    }
    with sock:
        sock.settimeout(start_timeout)  # the first request waits for the preload
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            reply = read_message(sock)
        except OSError as exc:
            raise WarmWorkerError(f"warm worker {name} did not answer: {exc}") from exc
        except ValueError as exc:
            raise WarmWorkerError(f"warm worker {name} gave no run worker ({exc})") from exc
    if isinstance(reply.get("pid"), int):
        return Forked(reply["pid"], float(reply["created"]), name)
    raise WarmWorkerError(str(reply.get("error") or f"warm worker {name} answered {reply!r}"))
