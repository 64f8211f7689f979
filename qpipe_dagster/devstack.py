"""`make run`: the whole thing on one laptop — demo site, Dagster UI + daemon, QStash receiver.

Everything runs on embedded defaults under DAGSTER_HOME (SQLite instance, LanceDB vectors, the
packaged model, bundled prices), so no accounts, servers or Docker are needed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def prepare_home(home: Path) -> Path:
    """Create DAGSTER_HOME with the repo's dagster.yaml (kept if the user already has one)."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        shutil.copyfile(REPO / "dagster.yaml", target)
    return home


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qpipe-dev", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("QPIPE_HOST", "127.0.0.1"))
    parser.add_argument("--ui-port", type=int, default=int(os.environ.get("QPIPE_UI_PORT", "3000")))
    parser.add_argument(
        "--demo-port", type=int, default=int(os.environ.get("QPIPE_DEMO_PORT", "8765"))
    )
    parser.add_argument(
        "--receiver-port", type=int, default=int(os.environ.get("QPIPE_RECEIVER_PORT", "8766"))
    )
    args = parser.parse_args(argv)

    home = prepare_home(Path(os.environ.get("DAGSTER_HOME") or REPO / ".dagster_home").resolve())
    os.environ["DAGSTER_HOME"] = str(home)

    from dagster import DagsterInstance

    from qpipe_dagster.defs.partitions import concepts_partitions
    from qpipe_dagster.demo import DEMO_CONCEPT, register_demo, serve_demo_site

    site = serve_demo_site(args.host, args.demo_port)
    base_url = f"http://{args.host}:{site.server_address[1]}/"
    register_demo(base_url)
    with DagsterInstance.get() as instance:
        if not instance.has_dynamic_partition(concepts_partitions.name, DEMO_CONCEPT):
            instance.add_dynamic_partitions(concepts_partitions.name, [DEMO_CONCEPT])

    env = {
        **os.environ,
        "QPIPE_RECEIVER_URL": os.environ.get(
            "QPIPE_RECEIVER_URL", f"http://{args.host}:{args.receiver_port}/api/qstash"
        ),
    }
    bin_dir = Path(sys.executable).parent
    children = [
        subprocess.Popen(
            [
                str(bin_dir / "dagster"),
                "dev",
                "-w",
                str(REPO / "workspace.yaml"),
                "-h",
                args.host,
                "-p",
                str(args.ui_port),
            ],
            env=env,
            cwd=REPO,
        ),
        subprocess.Popen(
            [
                str(bin_dir / "uvicorn"),
                "webhook_sensor.app:app",
                "--host",
                args.host,
                "--port",
                str(args.receiver_port),
                "--log-level",
                "warning",
                "--no-access-log",  # the receiver writes its own JSON line per delivery
            ],
            env=env,
            cwd=REPO,
        ),
    ]
    print(
        f"\nqpipe is starting (DAGSTER_HOME={home})\n"
        f"  Dagster UI      http://{args.host}:{args.ui_port}"
        "  (Jobs > concept_pipeline > Materialize all, partition 'demo')\n"
        f"  demo site       {base_url}\n"
        f"  QStash receiver http://{args.host}:{args.receiver_port}/api/qstash\n"
        "Press Ctrl-C to stop.\n",
        flush=True,
    )

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        deadline = time.time() + 20
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                child.kill()
        site.shutdown()

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    failed = [c.args[0] for c in children if c.poll() not in (None, 0)]
    stop()
    if failed:
        print(f"qpipe-dev: stopped because {', '.join(map(str, failed))} exited", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
