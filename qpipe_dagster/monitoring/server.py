"""Serve the pipeline metrics: `qpipe metrics serve` or `python -m qpipe_dagster.monitoring`.

A registry of its own (not prometheus_client's global one) holds only the pipeline collector,
so the endpoint shows pipeline state, not this exporter's Python internals.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, start_http_server

from qpipe_dagster.monitoring.collector import PipelineCollector
from qpipe_dagster.settings import env_value

DEFAULT_PORT = 9108
PORT_ENV = "QPIPE_METRICS_PORT"


def build_registry(collector: PipelineCollector | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector or PipelineCollector())
    return registry


def default_port(env=None) -> int:
    from qpipe_dagster.settings import env_int

    port = env_int(PORT_ENV, 1, 65_535, env)
    return DEFAULT_PORT if port is None else port


def serve(host: str, port: int, registry: CollectorRegistry | None = None):
    """Start the HTTP server in a thread; returns (server, thread). /metrics is the endpoint."""
    return start_http_server(port, addr=host, registry=registry or build_registry())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qpipe-metrics", description="Serve qpipe's pipeline metrics for Prometheus."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=None, help=f"port ({PORT_ENV}, default {DEFAULT_PORT})"
    )


def run(args: argparse.Namespace) -> int:
    host = args.host or env_value("QPIPE_METRICS_HOST") or "127.0.0.1"
    port = args.port if args.port is not None else default_port()
    try:
        server, _thread = serve(host, port)
    except OSError as exc:
        print(
            f"qpipe-metrics: cannot listen on {host}:{port} ({exc.strerror or exc}): choose"
            f" another with --port N or {PORT_ENV}=N",
            file=sys.stderr,
        )
        return 1
    print(f"qpipe metrics on http://{host}:{server.server_port}/metrics", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
