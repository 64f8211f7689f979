"""`make run` (python -m qpipe_dagster.devstack) started for real, on free ports, in a temp home.

Each case runs the module exactly as `make run` does, in its own process group, and the fixture
SIGKILLs that group and every process the stack was seen to start, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from qpipe_dagster_tests.e2e.stack import REPO, free_port, http_get, wait_for

START_S = 150.0  # a full start on a loaded 2-core machine; idle it takes about 10 s


class Stack:
    """One `python -m qpipe_dagster.devstack` process and what it was seen to start."""

    def __init__(self, home: Path, log: Path, args: list[str], env: dict[str, str]) -> None:
        self.home, self.log_path = home, log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "qpipe_dagster.devstack", *args],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.seen: dict[int, psutil.Process] = {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def remember(self) -> list[psutil.Process]:
        """Snapshot the stack's descendants (they outlive a killed parent as orphans)."""
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass
        return list(self.seen.values())

    def find(self, fragment: str) -> psutil.Process:
        def match() -> psutil.Process | None:
            return next((p for p in self.remember() if fragment in _cmdline(p)), None)

        return wait_for(match, START_S, f"a process running {fragment!r}", interval=0.05)  # type: ignore[return-value]

    def wait_ready(self, ui_port: str, receiver_port: str) -> None:
        """Wait until the UI and the receiver answer over HTTP (not for devstack's own words)."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"devstack exited ({self.proc.returncode}):\n{self.log()}")
            ui = http_get(f"http://127.0.0.1:{ui_port}/server_info", timeout=3)[0]
            return ui == 200 and http_get(f"http://127.0.0.1:{receiver_port}/health")[0] == 200

        try:
            wait_for(ready, START_S, "the Dagster UI and the receiver")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.log()[-3000:]}") from None
        self.remember()

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"devstack still running after {timeout:.0f}s:\n{self.log()[-3000:]}")

    def survivors(self) -> list[str]:
        """Processes the stack started that still run (zombies waiting for init excepted)."""
        left = []
        for proc in self.seen.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{proc.pid} {_cmdline(proc)[:120]}")
            except psutil.NoSuchProcess:
                pass
        return left

    def kill(self) -> None:
        self.remember()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for proc in self.seen.values():
            try:
                if proc.is_running():
                    proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(10)


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def _env(home: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without anything that points qpipe elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QPIPE_", "QSTASH_", "WEAVIATE_", "DAGSTER_"))
    }
    env.update(DAGSTER_HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    return env


def _ports() -> dict[str, str]:
    """Four distinct free ports: each socket stays bound until all are chosen, since the kernel
    may hand a just-closed port out again (two equal ports make the stack refuse to start)."""
    keys = ("QPIPE_UI_PORT", "QPIPE_DEMO_PORT", "QPIPE_RECEIVER_PORT", "QPIPE_METRICS_PORT")
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in keys]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return {key: str(sock.getsockname()[1]) for key, sock in zip(keys, socks, strict=True)}


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    started: list[Stack] = []

    def start(*args: str, home: Path | None = None, **env: str) -> Stack:
        home = home or tmp_path / "home"
        stack = Stack(home, tmp_path / f"devstack{len(started)}.log", list(args), _env(home, **env))
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.kill()


def _listening(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


# --- bad settings: a usage error naming the flag or variable, before anything starts -----------


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        # old: all three accepted and handed to dagster/uvicorn/the demo server
        (["--ui-port", "0"], {}, "argument --ui-port: '0' is invalid: must be a whole number"),
        (["--ui-port", "-1"], {}, "argument --ui-port: '-1' is invalid"),
        (["--receiver-port", "70000"], {}, "--receiver-port: '70000' is invalid"),
        # old: a ValueError traceback from int() while building the parser
        ([], {"QPIPE_UI_PORT": "abc"}, "QPIPE_UI_PORT='abc' is invalid: must be a whole number"),
        ([], {"QPIPE_DEMO_PORT": "-5"}, "QPIPE_DEMO_PORT='-5' is invalid"),
        ([], {"QPIPE_RECEIVER_PORT": "1e3"}, "(or pass --receiver-port)"),
        # old: two servers on one port; one of them failed to bind later
        (
            ["--ui-port", "5123"],
            {"QPIPE_RECEIVER_PORT": "5123"},
            "the Dagster UI (--ui-port) and the QStash receiver (QPIPE_RECEIVER_PORT) would both"
            " use port 5123",
        ),
    ],
)
def test_bad_port_setting_is_a_usage_error_naming_it(
    launch: Callable[..., Stack], args: list[str], env: dict[str, str], expected: str
) -> None:
    stack = launch(*args, **env)
    assert stack.wait_exit(60) == 2
    out = stack.log()
    assert expected in out
    assert "Traceback" not in out


def test_flag_wins_over_a_bad_variable_and_blank_means_unset(
    launch: Callable[..., Stack],
) -> None:
    """Old: int(' ') and int('abc') raised while argparse built its defaults, flag or not."""
    stack = launch(
        "--ui-port",
        str(free_port()),
        QPIPE_UI_PORT="abc",
        QPIPE_DEMO_PORT=" ",
        QPIPE_RECEIVER_PORT="",
        QPIPE_HOST="nosuch.invalid",  # stops it right after parsing, naming the host
    )
    assert stack.wait_exit(60) == 1
    out = stack.log()
    assert "qpipe-dev: QPIPE_HOST='nosuch.invalid' is not an address of this machine" in out
    assert "Traceback" not in out


def test_blank_host_means_the_default(launch: Callable[..., Stack]) -> None:
    """Old: QPIPE_HOST=' ' was used as the host (a socket.gaierror traceback); '' served on
    every interface and registered the demo seed as http://:PORT/index.html."""
    ports = _ports()
    with _listening(int(ports["QPIPE_DEMO_PORT"])):  # stops the start right after the host check
        stack = launch(QPIPE_HOST=" ", **ports)
        assert stack.wait_exit(60) == 1
    assert (
        f"qpipe-dev: port {ports['QPIPE_DEMO_PORT']} for the demo site (QPIPE_DEMO_PORT) is not"
        " available on 127.0.0.1:" in stack.log()
    )


@pytest.mark.parametrize("host_args", [["--host", "nosuch.invalid"], ["--host", "10.254.254.1"]])
def test_host_that_is_not_this_machine_is_named(
    launch: Callable[..., Stack], host_args: list[str]
) -> None:
    """Old: a socket.gaierror / EADDRNOTAVAIL traceback from the demo server."""
    stack = launch(*host_args, **_ports())
    assert stack.wait_exit(60) == 1
    out = stack.log()
    assert f"qpipe-dev: --host={host_args[1]!r} is not an address of this machine" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("key", "flag", "label"),
    [
        ("QPIPE_UI_PORT", "--ui-port", "the Dagster UI"),  # old: ran on, with no UI, forever
        ("QPIPE_DEMO_PORT", "--demo-port", "the demo site"),  # old: OSError traceback
        ("QPIPE_RECEIVER_PORT", "--receiver-port", "the QStash receiver"),  # old: "uvicorn exited"
        ("QPIPE_METRICS_PORT", "--metrics-port", "the metrics endpoint"),
    ],
)
def test_taken_port_stops_the_start_naming_port_flag_and_variable(
    launch: Callable[..., Stack], key: str, flag: str, label: str
) -> None:
    ports = _ports()
    with _listening(int(ports[key])):
        stack = launch(**ports)
        assert stack.wait_exit(60) == 1, stack.log()[-3000:]
    out = stack.log()
    assert (
        f"qpipe-dev: port {ports[key]} for {label} ({key}) is not available on 127.0.0.1:"
        " Address already in use." in out
    )
    assert f"{flag} N or {key}=N" in out
    assert "Traceback" not in out
    assert stack.survivors() == []


# --- DAGSTER_HOME: named, with what to do --------------------------------------------------------


def test_dagster_home_that_is_a_file_or_under_a_file_is_named(
    launch: Callable[..., Stack], tmp_path: Path
) -> None:
    """Old: FileExistsError / NotADirectoryError tracebacks from Path.mkdir."""
    a_file = tmp_path / "home_file"
    a_file.write_text("not a folder")
    stack = launch(home=a_file, **_ports())
    assert stack.wait_exit(60) == 1
    assert f"qpipe-dev: DAGSTER_HOME={str(a_file)!r} is a file, not a folder" in stack.log()

    under = a_file / "sub"
    stack = launch(home=under, **_ports())
    assert stack.wait_exit(60) == 1
    out = stack.log()
    assert f"qpipe-dev: DAGSTER_HOME={str(under)!r} cannot be used: Not a directory" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("storage:\n  sqlite: [\n", "dagster.yaml is not valid YAML: while parsing"),
        (
            "storage:\n  sqlitex: 1\n",
            "cannot be loaded: Errors whilst loading dagster instance config at dagster.yaml."
            ' Error 1: Received unexpected config entry "sqlitex" at path root:storage.;',
        ),
        # old: loaded lazily, so the stack started and the first run failed
        (
            "run_launcher:\n  module: nosuch_module\n  class: Launcher\n",
            "cannot be loaded: Failure condition: Couldn't import module nosuch_module",
        ),
    ],
)
def test_broken_dagster_yaml_is_named_before_anything_starts(
    launch: Callable[..., Stack], tmp_path: Path, config: str, expected: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(config)
    stack = launch(home=home, **_ports())
    assert stack.wait_exit(120) == 1
    out = stack.log()
    assert f"qpipe-dev: {home / 'dagster.yaml'}" in out and expected in out
    assert "delete it and `make run` writes the repository's default" in out
    assert "Traceback" not in out
    assert stack.survivors() == []


# --- a running stack -----------------------------------------------------------------------------


@pytest.mark.slow
def test_second_start_in_the_same_home_first_screen_and_sigterm(
    launch: Callable[..., Stack],
) -> None:
    ports = _ports()
    stack = launch(**ports)
    stack.wait_ready(ports["QPIPE_UI_PORT"], ports["QPIPE_RECEIVER_PORT"])
    ui = f"http://127.0.0.1:{ports['QPIPE_UI_PORT']}"
    demo = f"http://127.0.0.1:{ports['QPIPE_DEMO_PORT']}/"
    receiver = f"http://127.0.0.1:{ports['QPIPE_RECEIVER_PORT']}/api/qstash"
    metrics = f"http://127.0.0.1:{ports['QPIPE_METRICS_PORT']}/metrics"

    # Old: a second stack ran beside the first on the same SQLite instance (two daemons running
    # every sensor), and re-pointed the `demo` concept at its own demo site.
    second = launch(home=stack.home, **_ports())
    assert second.wait_exit(60) == 1
    assert (
        f"qpipe-dev: another `make run` (pid {stack.proc.pid}, Dagster UI {ui}) is already"
        f" using DAGSTER_HOME={str(stack.home)!r}" in second.log()
    )
    assert stack.proc.poll() is None  # the first one is untouched

    from qpipe_dagster.concepts import ConceptRegistry

    registry = ConceptRegistry(stack.home / "qpipe" / "concepts.sqlite")
    assert registry.get("demo").seed_urls == (f"{demo}index.html",)

    # Old: the URLs were printed before anything listened, then scrolled away under Dagster's
    # start-up log; nothing said what to type. Now a banner follows the first answers.
    wait_for(lambda: "qpipe is ready" in stack.log(), 30, "the 'qpipe is ready' banner")
    # the warm worker starts once the stack is up (devstack's own child, stopped with it), so the
    # first concept does not wait for its load
    warm = stack.find("qpipe_dagster.launcher.warm.server")
    assert warm.ppid() == stack.proc.pid
    assert "--module qpipe_dagster.definitions" in _cmdline(warm)
    banner = stack.log().split("qpipe is ready", 1)[1]
    for url in (ui, demo, receiver, metrics):
        assert url in banner
    status, body = http_get(metrics)  # the pipeline's Prometheus endpoint answers with data
    assert status == 200 and b"qpipe_runs_completed_total" in body
    submit = next(line for line in banner.splitlines() if " submit " in line)
    # The printed command works as printed: the receiver takes the signed message.
    argv = shlex.split(submit)
    assert argv[0].endswith("qpipe") and f"--receiver-url {receiver}" in submit
    done = subprocess.run(
        [str(Path(sys.executable).parent / "qpipe"), *argv[1:]],
        cwd=REPO,
        env=_env(stack.home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    stack.proc.send_signal(signal.SIGTERM)  # the leader only, as `kill PID` does
    assert stack.wait_exit(60) == 0
    assert stack.survivors() == []
    assert "qpipe-dev: SIGTERM: stopping everything" in stack.log()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fragment", "expected"),
    [
        # old: dagster dev exits 0 after its daemon dies, and so did the whole stack, silently
        (
            "dagster._daemon",
            "qpipe-dev: the Dagster UI + daemon (dagster dev) stopped on its own (exit code 0)",
        ),
        # old: "stopped because .../dagster exited", and webserver, daemon and code servers
        # lived on as orphans holding the UI port and the SQLite files
        (
            "bin/dg dev",
            "qpipe-dev: the Dagster UI + daemon (dagster dev) stopped on its own (killed by SIGKILL)",
        ),
        (
            "webhook_sensor.app:app",
            "qpipe-dev: the QStash receiver (uvicorn) stopped on its own (killed by SIGKILL)",
        ),
    ],
)
def test_a_child_that_dies_stops_the_stack_naming_it_and_its_last_words(
    launch: Callable[..., Stack], fragment: str, expected: str
) -> None:
    ports = _ports()
    stack = launch(**ports)
    stack.wait_ready(ports["QPIPE_UI_PORT"], ports["QPIPE_RECEIVER_PORT"])
    victim = stack.find(fragment)
    victim.kill()
    assert stack.wait_exit(90) == 1
    out = stack.log()
    assert expected in out, out[-3000:]
    assert "Its last lines:" in out
    if fragment == "dagster._daemon":  # the tail carries dagster's own reason
        report = out.split(expected, 1)[1]
        assert "dagster-daemon process shut down unexpectedly with return code -9" in report
    assert stack.survivors() == []


@pytest.mark.slow
def test_ui_port_taken_after_the_check_stops_the_stack(launch: Callable[..., Stack]) -> None:
    """Taken between devstack's check and the webserver's bind: old and, without the log
    watch, new code ran on with no UI (dagster-webserver does not exit when it cannot bind)."""
    ports = _ports()
    stack = launch(**ports)
    stack.find("bin/dg dev")  # the check is done; the webserver binds seconds later
    with _listening(int(ports["QPIPE_UI_PORT"])):
        assert stack.wait_exit(120) == 1
    out = stack.log()
    assert (
        f"cannot listen on port {ports['QPIPE_UI_PORT']} for the Dagster UI (QPIPE_UI_PORT):"
        " address already in use. Choose another port with --ui-port N or QPIPE_UI_PORT=N"
    ) in out
    assert stack.survivors() == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "reason"),
    [
        # Ctrl-C in a terminal: SIGINT to the whole foreground group. Old: every child got it
        # twice (the terminal's and devstack's), and uvicorn and click printed tracebacks.
        ("group", "SIGINT"),
        # the terminal closed: old code died at once and left every server running
        ("leader", "SIGHUP"),
    ],
)
def test_stop_signal_stops_everything_without_tracebacks(
    launch: Callable[..., Stack], how: str, reason: str
) -> None:
    ports = _ports()
    stack = launch(**ports)
    stack.wait_ready(ports["QPIPE_UI_PORT"], ports["QPIPE_RECEIVER_PORT"])
    signum = getattr(signal, reason)
    if how == "group":
        os.killpg(stack.proc.pid, signum)
    else:
        stack.proc.send_signal(signum)
    assert stack.wait_exit(60) == 0
    assert stack.survivors() == []
    out = stack.log()
    assert "Traceback" not in out and "Aborted!" not in out, out[-3000:]
    assert f"qpipe-dev: {reason}: stopping everything" in out


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_sigkilled_devstack_leaves_no_servers_behind(launch: Callable[..., Stack]) -> None:
    """Old: `kill -9` of make run (or the OOM killer) left dagster dev, its webserver, daemon and
    code servers, and the receiver running, holding the ports and the SQLite files."""
    ports = _ports()
    stack = launch(**ports)
    stack.wait_ready(ports["QPIPE_UI_PORT"], ports["QPIPE_RECEIVER_PORT"])
    stack.find("dagster_webserver")
    stack.find("webhook_sensor.app:app")
    stack.proc.kill()  # the leader only: its children get no word from it
    stack.proc.wait(10)
    wait_for(lambda: not stack.survivors(), 60, "every server to stop after devstack's SIGKILL")
    for port in ports.values():  # free again for the next `make run`
        with socket.socket() as s:
            # as the servers bind: a listener still blocks this, closed connections do not
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", int(port)))
