"""`make run`: the whole thing on one laptop — demo site, Dagster UI + daemon, QStash receiver.

Everything runs on embedded defaults under DAGSTER_HOME (SQLite instance, LanceDB vectors, the
packaged model, bundled prices), so no accounts, servers or Docker are needed.

Whatever stops the stack (Ctrl-C, SIGTERM, a child that dies, a port that is taken) stops all of
it: a half-running stack holds ports and SQLite files and makes the next `make run` fail.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from qpipe_dagster.paths import DAGSTER_HOME_DEFAULT
from qpipe_dagster.settings import SettingError, env_int, env_path, env_value, whole_number

if TYPE_CHECKING:  # psutil is imported where processes are tracked
    import psutil

REPO = Path(__file__).resolve().parents[1]
LOCK_NAME = ".qpipe-dev.lock"
STOP_TIMEOUT_S = 20.0
TAIL_LINES = 15
# uvicorn's words when it cannot listen; dagster-webserver then keeps running without a UI.
_BIND_ERROR = re.compile(r"error while attempting to bind on address \((.*), (\d+)\): (.*)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class StartError(RuntimeError):
    """The stack cannot start; the message names the setting or file to change."""


@dataclass(frozen=True)
class PortSpec:
    key: str
    label: str
    flag: str
    env: str
    default: int
    lowest: int  # 0 only where the server reports the port it got (the demo site)


PORTS = (
    PortSpec("ui", "the Dagster UI", "--ui-port", "QPIPE_UI_PORT", 3000, 1),
    PortSpec("demo", "the demo site", "--demo-port", "QPIPE_DEMO_PORT", 8765, 0),
    PortSpec("receiver", "the QStash receiver", "--receiver-port", "QPIPE_RECEIVER_PORT", 8766, 1),
    PortSpec("metrics", "the metrics endpoint", "--metrics-port", "QPIPE_METRICS_PORT", 9108, 1),
)


@dataclass(frozen=True)
class Settings:
    host: str
    host_source: str  # "--host" or "QPIPE_HOST": where a bad host came from
    ports: dict[str, int]
    sources: dict[str, str]  # per port: "--ui-port" or "QPIPE_UI_PORT" (or the default)

    def change_hint(self, key: str) -> str:
        spec = next(p for p in PORTS if p.key == key)
        return f"{spec.flag} N or {spec.env}=N"


def _url_host(host: str) -> str:
    """The host as a browser reaches it: a wildcard address is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def _port_type(spec: PortSpec):  # an argparse `type`
    def parse(text: str) -> int:
        try:
            return whole_number(text, spec.lowest, 65_535)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is invalid: {exc}") from None

    parse.__name__ = "port"
    return parse


def parse_settings(argv: Sequence[str] | None, env: Mapping[str, str]) -> Settings:
    """Flags win over QPIPE_* variables; a blank variable means unset; a bad value is a usage
    error naming the flag or variable (was a traceback from int(), or a port argparse let by)."""
    parser = argparse.ArgumentParser(
        prog="qpipe-dev", description=(__doc__ or "").partition("\n")[0]
    )
    parser.add_argument("--host", help="address to listen on (QPIPE_HOST, default 127.0.0.1)")
    for spec in PORTS:
        zero = "; 0 picks a free one" if spec.lowest == 0 else ""
        parser.add_argument(
            spec.flag,
            type=_port_type(spec),
            metavar="PORT",
            help=f"port of {spec.label} ({spec.env}, default {spec.default}{zero})",
        )
    args = parser.parse_args(argv)
    ports: dict[str, int] = {}
    sources: dict[str, str] = {}
    for spec in PORTS:
        given = getattr(args, spec.key + "_port")
        if given is not None:  # the flag wins: the variable is not even parsed
            ports[spec.key], sources[spec.key] = given, spec.flag
            continue
        try:
            from_env = env_int(spec.env, spec.lowest, 65_535, env)
        except SettingError as exc:  # "NAME='abc' is invalid: must be a whole number from ..."
            parser.error(f"{exc} (or pass {spec.flag})")
        if from_env is not None:
            ports[spec.key], sources[spec.key] = from_env, spec.env
        else:
            ports[spec.key], sources[spec.key] = spec.default, "the default"
    taken: dict[int, PortSpec] = {}
    for spec in PORTS:
        port = ports[spec.key]
        if port and port in taken:
            other = taken[port]
            parser.error(
                f"{other.label} ({sources[other.key]}) and {spec.label} ({sources[spec.key]})"
                f" would both use port {port}: give each its own port"
            )
        taken[port] = spec
    if args.host is not None:
        host, host_source = args.host.strip(), "--host"
    else:
        host, host_source = env_value("QPIPE_HOST", env) or "", "QPIPE_HOST"
    if not host:
        host, host_source = "127.0.0.1", "the default host"
    return Settings(host, host_source, ports, sources)


def _bind(settings: Settings, key: str) -> socket.socket:
    """A socket bound to the port, or StartError naming the port, the host and what to change."""
    spec = next(p for p in PORTS if p.key == key)
    host, port = settings.host, settings.ports[key]
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise StartError(
            f"{settings.host_source}={host!r} is not an address of this machine ({why}):"
            " use e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers themselves do
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRNOTAVAIL:
            raise StartError(
                f"{settings.host_source}={host!r} is not an address of this machine:"
                " use e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
            ) from None
        source = settings.sources[key]
        advice = (
            "Stop whatever holds it (an earlier `make run` still running?) or choose another"
            if exc.errno == errno.EADDRINUSE
            else "Choose another"
        )
        raise StartError(
            f"port {port} for {spec.label} ({source}) is not available on {host}:"
            f" {exc.strerror}. {advice} port with {settings.change_hint(key)}."
        ) from None
    return sock


def prepare_home(home: Path) -> Path:
    """Create DAGSTER_HOME with the repo's dagster.yaml (kept if the user already has one).

    A file where the folder should be, or a folder that cannot be written, is named with the
    variable (was a FileExistsError / PermissionError traceback)."""
    target = home / "dagster.yaml"
    try:
        if home.exists() and not home.is_dir():
            raise StartError(
                f"DAGSTER_HOME={str(home)!r} is a file, not a folder: point DAGSTER_HOME at a"
                " folder (make run's default is .dagster_home in the repository)"
            )
        home.mkdir(parents=True, exist_ok=True)
        if target.exists() and not target.is_file():
            raise StartError(f"{target} is not a file: remove it and `make run` writes a new one")
        if not target.exists():
            shutil.copyfile(REPO / "dagster.yaml", target)
    except OSError as exc:
        raise StartError(
            f"DAGSTER_HOME={str(home)!r} cannot be used: {exc.strerror or exc}"
            f"{f' ({exc.filename})' if exc.filename else ''}; point DAGSTER_HOME at a folder"
            " you can write"
        ) from None
    return home


def lock_home(home: Path) -> int:
    """Hold DAGSTER_HOME for this stack: two daemons on one SQLite instance both run every
    sensor and schedule, and each start re-points the `demo` concept at its own demo site.

    A kernel lock (flock), so a crashed stack leaves nothing stale behind; the fd is not
    inherited by the children (PEP 446)."""
    path = home / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StartError(
            f"DAGSTER_HOME={str(home)!r} is not writable ({exc.strerror}: {path}); point"
            " DAGSTER_HOME at a folder you can write"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = ""
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            holder = f" (pid {info['pid']}, Dagster UI {info['ui']})"
        os.close(fd)
        raise StartError(
            f"another `make run`{holder} is already using DAGSTER_HOME={str(home)!r}: stop it"
            " (Ctrl-C in its terminal) or give this one its own DAGSTER_HOME"
        ) from None
    return fd


def check_instance(home: Path) -> None:
    """Load the instance once here, so a broken dagster.yaml is one line naming the file, not a
    traceback from each of the three Dagster processes."""
    import yaml
    from dagster import DagsterInstance

    config = home / "dagster.yaml"
    fix = "fix it, or delete it and `make run` writes the repository's default"
    try:
        with DagsterInstance.get() as instance:
            instance.get_runs_count()
            # loaded lazily: a misspelt launcher or coordinator class fails only at the first run
            _ = (instance.run_launcher, instance.run_coordinator)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise StartError(f"{config} is not valid YAML: {detail}; {fix}") from None
    except Exception as exc:  # DagsterInvalidConfigError, a class that does not import, ...
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        # Dagster appends the whole expected schema to each error: keep what was wrong
        detail = " ".join(ln.split(" Expected: ")[0] for ln in lines[:4]) or type(exc).__name__
        raise StartError(f"{config} cannot be loaded: {detail}; {fix}") from None


def code_location_module() -> str:
    """The module `dg dev` loads: `code_location_target_module` in pyproject.toml's [tool.dg]."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return project["tool"]["dg"]["project"]["code_location_target_module"]


def prewarm() -> bool:
    """Start the warm worker now that the stack is up, so the first concept does not wait for its
    load (it would start at the first run otherwise). True when one was started."""
    from dagster import DagsterInstance

    from qpipe_dagster.launcher.warm.client import start_for

    with DagsterInstance.get() as instance:
        config = getattr(instance.run_launcher, "warm_config", None)
        home = instance.root_directory
    if config is None:
        return False
    idle = float(config.get("idle_timeout_s", 600))
    return start_for(home, code_location_module(), str(REPO), idle_timeout=idle)


class Child:
    """One server process; its output passes through to ours and its last lines are kept, so a
    child that dies can be named with its own words (Dagster logs to stdout, uvicorn to stderr)."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], cwd: Path) -> None:
        self.name = name
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.bind_error: tuple[int, str] | None = None  # (port, why)
        self._lock = threading.Lock()
        # Its own process group: a terminal's Ctrl-C reaches only devstack, which passes on one
        # SIGINT. Two (the terminal's and ours) made uvicorn and click print tracebacks.
        # Started through `with_parent`, so it gets that SIGINT from the kernel even when devstack
        # is SIGKILLed (Linux). The kernel sends it when the creating *thread* ends: this runs on
        # the main thread, which lives as long as devstack does.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qpipe_dagster.with_parent", str(os.getpid()), *argv],
            env=dict(env),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            process_group=0,
        )
        for stream, ours in ((self.proc.stdout, sys.stdout), (self.proc.stderr, sys.stderr)):
            threading.Thread(
                target=self._pump, args=(stream, ours), name=f"output-{name}", daemon=True
            ).start()

    def _pump(self, stream: IO[bytes], ours: IO[str]) -> None:
        out = getattr(ours, "buffer", None)
        for raw in iter(stream.readline, b""):
            if out is not None:
                with contextlib.suppress(OSError, ValueError):  # our terminal may be gone
                    out.write(raw)
                    out.flush()
            line = _ANSI.sub("", raw.decode(errors="replace")).rstrip()
            if line:
                with self._lock:
                    self.tail.append(line)
            found = _BIND_ERROR.search(line)
            if found and self.bind_error is None:
                self.bind_error = (int(found.group(2)), found.group(3).strip())

    def exit_reason(self) -> str:
        code = self.proc.returncode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def report(self, what: str) -> str:
        time.sleep(0.3)  # let the pump catch the last lines it wrote
        with self._lock:
            lines = "\n".join(f"    {ln}" for ln in self.tail) or "    (it wrote nothing)"
        return f"qpipe-dev: {self.name} {what}; stopping the rest. Its last lines:\n{lines}"


class _Descendants:
    """Every process the stack started, children's children included, remembered as it runs:
    when `dagster dev` dies its webserver, daemon and code servers live on and are no longer
    anyone's children, but they still hold the UI port and the SQLite files."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self.seen: dict[int, psutil.Process] = {}

    def refresh(self) -> None:
        with contextlib.suppress(self._psutil.Error):
            for proc in self._me.children(recursive=True):
                self.seen.setdefault(proc.pid, proc)

    def end(self, timeout: float) -> None:
        """SIGTERM what is still running (pid reuse is checked by psutil), then SIGKILL."""
        psutil = self._psutil
        alive = [p for p in self.seen.values() if p.is_running()]
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, left = psutil.wait_procs(alive, timeout=timeout)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(left, timeout=5)


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _qpipe_command() -> str:
    exe = Path(sys.executable).parent / "qpipe"
    with contextlib.suppress(ValueError):
        rel = exe.relative_to(Path.cwd())
        return str(rel) if rel.parts[0].startswith(".") else f"./{rel}"
    return str(exe)


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv, os.environ)
    try:
        return _run(settings)
    except StartError as exc:
        print(f"qpipe-dev: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the servers started: nothing to stop
        print("\nqpipe-dev: interrupted before start", file=sys.stderr, flush=True)
        return 130


def _run(settings: Settings) -> int:
    home = (env_path("DAGSTER_HOME") or REPO / DAGSTER_HOME_DEFAULT).resolve()
    prepare_home(home)
    os.environ["DAGSTER_HOME"] = str(home)
    lock_fd = lock_home(home)
    # Every port before anything starts: a taken UI port used to leave the stack running with
    # no UI, a taken receiver port to stop it with only "uvicorn exited".
    for spec in PORTS:
        _bind(settings, spec.key).close()
    host = settings.host
    ui_url = f"http://{_url_host(host)}:{settings.ports['ui']}"
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, json.dumps({"pid": os.getpid(), "ui": ui_url}).encode(), 0)

    check_instance(home)
    from dagster import DagsterInstance

    from qpipe_dagster.defs.partitions import CONCEPTS_PARTITIONS
    from qpipe_dagster.demo import DEMO_CONCEPT, register_demo, serve_demo_site

    try:
        site = serve_demo_site(host, settings.ports["demo"])
    except OSError:  # taken since the check above
        _bind(settings, "demo").close()  # raises StartError naming the port
        raise
    base_url = f"http://{_url_host(host)}:{site.server_address[1]}/"
    register_demo(base_url)
    with DagsterInstance.get() as instance:
        if not instance.has_dynamic_partition(CONCEPTS_PARTITIONS, DEMO_CONCEPT):
            instance.add_dynamic_partitions(CONCEPTS_PARTITIONS, [DEMO_CONCEPT])

    receiver_port = settings.ports["receiver"]
    receiver_url = env_value("QPIPE_RECEIVER_URL") or (
        f"http://{_url_host(host)}:{receiver_port}/api/qstash"
    )
    env = {**os.environ, "QPIPE_RECEIVER_URL": receiver_url}
    bin_dir = Path(sys.executable).parent
    descendants = _Descendants()
    children: list[Child] = []
    stopping: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        if stopping:  # a second Ctrl-C while stopping: do not wait for a clean stop
            stopping.append("force")
            return
        raise _Stop(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)

    def stop() -> None:
        stopping.append("stop")
        signal.signal(signal.SIGINT, on_signal)
        descendants.refresh()
        for child in children:
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in children:
            while child.proc.poll() is None and time.monotonic() < deadline:
                if "force" in stopping:
                    break
                time.sleep(0.1)
        # what ignored SIGINT, and what outlived its parent (e.g. dagster dev's children)
        descendants.end(timeout=0 if "force" in stopping else 5)
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(5)
        site.shutdown()

    failure = ""
    probe_host = _url_host(host)
    try:
        children.append(
            Child(
                "the Dagster UI + daemon (dagster dev)",
                # dg dev: the current Dagster CLI (`dagster dev` prints that it is superseded);
                # it runs dagster dev on the project [tool.dg] in pyproject.toml names.
                [*(str(bin_dir / "dg"), "dev"), *("-h", host, "-p", str(settings.ports["ui"]))],
                {**env, "VIRTUAL_ENV": sys.prefix},  # dg warns when the active venv is not .venv
                REPO,
            )
        )
        children.append(
            Child(
                "the QStash receiver (uvicorn)",
                [
                    *(str(bin_dir / "uvicorn"), "webhook_sensor.app:app"),
                    *("--host", host, "--port", str(receiver_port), "--log-level", "warning"),
                    "--no-access-log",  # the receiver writes its own JSON line per delivery
                ],
                env,
                REPO,
            )
        )
        metrics_port = settings.ports["metrics"]
        children.append(
            Child(
                "the metrics endpoint (qpipe metrics serve)",
                [
                    *(sys.executable, "-m", "qpipe_dagster.monitoring"),
                    *("--host", host, "--port", str(metrics_port)),
                ],
                env,
                REPO,
            )
        )
        print(
            f"\nqpipe is starting (DAGSTER_HOME={home}): Dagster UI {ui_url}, demo site"
            f" {base_url}, QStash receiver {receiver_url}.\nWhat to do next follows once"
            " everything answers; Ctrl-C stops it all.\n",
            flush=True,
        )
        ready, rounds = False, 0
        while not failure:
            if rounds % 4 == 0:  # a /proc scan: every 2 s is often enough to see each process
                descendants.refresh()
            rounds += 1
            for child in children:
                if child.bind_error is not None:  # taken since the check before the start
                    port, why = child.bind_error
                    key = next((k for k, p in settings.ports.items() if p == port), "ui")
                    spec = next(p for p in PORTS if p.key == key)
                    failure = child.report(
                        f"cannot listen on port {port} for {spec.label} ({settings.sources[key]}):"
                        f" {why}. Choose another port with {settings.change_hint(key)}"
                    )
                elif child.proc.poll() is not None:
                    failure = child.report(f"stopped on its own ({child.exit_reason()})")
                if failure:
                    break
            if failure:
                break
            if not ready:
                ready = (
                    _ready(f"http://{probe_host}:{settings.ports['ui']}/server_info")
                    and _ready(f"http://{probe_host}:{receiver_port}/health")
                    and _ready(f"http://{probe_host}:{metrics_port}/metrics")
                )
                if ready:
                    metrics_url = f"http://{probe_host}:{metrics_port}/metrics"
                    print(_banner(home, ui_url, base_url, receiver_url, metrics_url), flush=True)
                    try:
                        prewarm()
                    except Exception as exc:  # runs start it themselves: a speed-up, not a need
                        print(
                            f"qpipe-dev: the warm worker was not started ahead ({exc}); the"
                            " first run starts it",
                            file=sys.stderr,
                            flush=True,
                        )
            time.sleep(0.5)
    except (KeyboardInterrupt, _Stop) as exc:
        reason = str(exc) or "SIGINT"
        print(f"\nqpipe-dev: {reason}: stopping everything …", file=sys.stderr, flush=True)
    finally:
        stop()
        os.close(lock_fd)
    if failure:
        print(failure, file=sys.stderr, flush=True)
        return 1
    return 0


def _banner(
    home: Path, ui_url: str, demo_url: str, receiver_url: str, metrics_url: str = ""
) -> str:
    """What a newcomer needs once everything answers: where to click and what to type."""
    qpipe = _qpipe_command()
    return (
        f"\nqpipe is ready (DAGSTER_HOME={home})\n"
        f"  Dagster UI       {ui_url}\n"
        f"                   Jobs > concept_pipeline > Materialize all, partition 'demo'\n"
        f"  demo site        {demo_url}\n"
        f"  QStash receiver  {receiver_url}\n"
        + (f"  metrics          {metrics_url}\n" if metrics_url else "")
        + f"Send a concept through the receiver (a run starts within a minute):\n"
        f'  {qpipe} submit "demo two" --url {demo_url}index.html --receiver-url {receiver_url}\n'
        f"Press Ctrl-C to stop everything.\n"
    )


if __name__ == "__main__":
    sys.exit(main())
