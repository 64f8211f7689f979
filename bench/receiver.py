"""Receiver throughput: signed deliveries through verification + durable inbox vs a bare endpoint.

One uvicorn worker serves `POST /api/qstash` (the real receiver: verify, validate, group-
committed SQLite WAL with synchronous=FULL, in its inbox writer process; server CPU figures
include that process), `POST /bare` (a Starlette route returning 200: the
issue's anchor) and `POST /bare-asgi` (a raw ASGI callable returning 200, dispatched ahead of
Starlette exactly as the receiver's delivery path is: the stricter anchor) on loopback. A raw-socket asyncio load client (keep-alive, pre-signed requests, unique message ids)
drives each for a few seconds. The three phases run in turn, several rounds over: this machine's
speed drifts by tens of percent within a minute, so each round's ratio compares phases measured
seconds apart, and the figures reported are the medians over rounds. Then verification alone is
timed against the official SDK's `Receiver.verify`. Last line: one JSON object with the figures.

    .venv/bin/python bench/receiver.py [--rounds 3] [--seconds 2] [--connections 64] [--clients 1]
        [--no-inbox-phase]   # diagnostic: the same endpoint with the inbox left out
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KEY = "sig_BenchCurrentKey0123456789abcdef"
NO_INBOX_PATH = "/api/qstash-no-inbox"  # --no-inbox-phase: the receiver with its inbox left out
NEXT_KEY = "sig_BenchNextKey0123456789abcdefgh"
SIGNED_PATHS = ("/api/qstash", NO_INBOX_PATH)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(port: int, inbox: str, home: str) -> None:
    import uvicorn
    from starlette.responses import Response
    from starlette.routing import Route

    from webhook_sensor.app import create_app
    from webhook_sensor.settings import Settings

    async def bare(_request):  # the anchor: same server, no work
        return Response(b'{"status":"ok"}', media_type="application/json")

    bare_asgi_start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-length", b"15"), (b"content-type", b"application/json")],
    }
    bare_asgi_body = {"type": "http.response.body", "body": b'{"status":"ok"}'}

    async def bare_asgi(_scope, _receive, send):  # the strict anchor: no framework either
        await send(bare_asgi_start)
        await send(bare_asgi_body)

    settings = Settings(
        current_signing_key=KEY,
        next_signing_key=NEXT_KEY,
        receiver_url=f"http://127.0.0.1:{port}/api/qstash",
        inbox_path=Path(inbox),
        dagster_home=Path(home),
        rate_limit_per_s=1e9,  # measure capacity, not the limiter
        using_dev_keys=False,
    )
    receiver = create_app(settings, extra_routes=[Route("/bare", bare, methods=["POST"])])

    class NoInbox:  # diagnostic only: acknowledges without storing (NOT durable)
        async def submit(self, record, loop=None) -> bool:
            return True

        def close(self) -> None:
            pass

        async def aclose(self) -> None:
            pass

    # The same delivery endpoint (verify, validate, log, metrics) minus the inbox: the ceiling
    # any inbox design could reach on this machine. Its lifespan never runs; set what it sets.
    ceiling = create_app(settings)
    ceiling.state.receiver.writer = NoInbox()

    async def app(scope, receive, send):  # /api/qstash pays this extra check too
        if scope["type"] == "http" and scope["path"] == "/bare-asgi":
            await bare_asgi(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == NO_INBOX_PATH:
            await ceiling.deliver(scope, receive, send)
        else:
            await receiver(scope, receive, send)

    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning",
                access_log=False, loop="uvloop", http="httptools")  # fmt: skip


def _token(url: str, body: bytes, now: int) -> str:
    def enc(obj: dict) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=")

    import hmac

    claims = {
        "iss": "Upstash", "sub": url, "exp": now + 300, "nbf": 0, "iat": now,
        "jti": "jwt_bench", "body": base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode(),
    }  # fmt: skip
    signing_input = enc({"alg": "HS256", "typ": "JWT"}) + b"." + enc(claims)
    sig = base64.urlsafe_b64encode(hmac.new(KEY.encode(), signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + sig.rstrip(b"=")).decode()


def _requests(port: int, path: str, count: int, tag: str) -> list[bytes]:
    url = f"http://127.0.0.1:{port}/api/qstash"
    now = int(time.time())
    out = []
    tokens: dict[bytes, str] = {}  # the anchors ignore the signature: sign each body once
    for i in range(count):
        body = json.dumps(
            {"concept": f"bench concept {i % 50}", "urls": ["https://example.com/"]}
        ).encode()
        if path in SIGNED_PATHS:
            token = _token(url, body, now)
        else:
            token = tokens.get(body) or tokens.setdefault(body, _token(url, body, now))
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nUpstash-Message-Id: msg_{tag}_{i}\r\n"
            f"Upstash-Retried: 0\r\nUpstash-Signature: {token}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _drive(
    port: int, reqs: list[bytes], conns: int, seconds: float, reuse: bool = False
) -> tuple[int, list[float], dict]:
    """Closed loop on `conns` keep-alive connections; `reuse` cycles the requests (anchors only:
    they store nothing, while a signed request sent twice would be a cheaper duplicate)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    it = itertools.cycle(reqs) if reuse else iter(reqs)
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                req = next(it, None)
                if req is None:
                    return
                t0 = time.perf_counter()
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return (
        len(latencies),
        latencies,
        {"elapsed": time.perf_counter() - started, "statuses": statuses},
    )


def _client(args: tuple) -> tuple[int, list[float], dict]:
    port, path, count, tag, conns, seconds = args
    reqs = _requests(port, path, count, tag)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_drive(port, reqs, conns, seconds, reuse=path not in SIGNED_PATHS))


def _phase(port: int, path: str, tag: str, clients: int, conns: int, seconds: float) -> dict:
    # Signed requests are used once each (unique message ids), so the pool must outlast the
    # phase: 40,000/s is well above what one worker stores. The anchors cycle a smaller pool.
    signed = path in SIGNED_PATHS
    per_client = (int(40000 * seconds / clients) if signed else 20000) + 2000
    with mp.get_context("spawn").Pool(clients) as pool:
        results = pool.map(
            _client,
            [
                (port, path, per_client, f"{tag}{c}", conns // clients, seconds)
                for c in range(clients)
            ],
        )
    n = sum(r[0] for r in results)
    lat = sorted(x for r in results for x in r[1])
    elapsed = max(r[2]["elapsed"] for r in results)
    statuses: dict[int, int] = {}
    for r in results:
        for k, v in r[2]["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    return {
        "rps": n / elapsed,
        "p50_ms": lat[len(lat) // 2] * 1000 if lat else None,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1000 if lat else None,
        "requests": n,
        "statuses": statuses,
        "exhausted": signed and n >= per_client * clients,
    }


def _cpu_s(pid: int) -> float:
    """utime + stime of the server and its children (the inbox writer process), all threads."""
    import psutil

    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _verify_timings(iterations: int) -> tuple[float, float]:
    from qstash import Receiver

    from webhook_sensor.verify import SignatureVerifier

    url = "https://qpipe.example.com/api/qstash"
    body = b'{"concept": "bench", "urls": ["https://example.com/"]}'
    token = _token(url, body, int(time.time()))
    ours = SignatureVerifier(KEY, NEXT_KEY, url)
    sdk = Receiver(KEY, NEXT_KEY)
    text = body.decode()
    best_ours = best_sdk = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(iterations):
            ours.verify(token, body)
        best_ours = min(best_ours, (time.perf_counter() - t0) / iterations)
        t0 = time.perf_counter()
        for _ in range(iterations):
            sdk.verify(signature=token, body=text, url=url)
        best_sdk = min(best_sdk, (time.perf_counter() - t0) / iterations)
    return best_ours * 1e6, best_sdk * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="bare/verified phases, in turn")
    parser.add_argument("--seconds", type=float, default=2.0, help="per phase and round")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--clients", type=int, default=1, help="load-client processes")
    parser.add_argument("--verify-iterations", type=int, default=5000)
    parser.add_argument(
        "--no-inbox-phase", action="store_true",
        help="diagnostic: also time the receiver with its inbox left out (not durable), the"
        " ceiling any inbox design could reach beside the same bare endpoint",
    )  # fmt: skip
    parser.add_argument(
        "--serve", nargs=3, metavar=("PORT", "INBOX", "HOME"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        _serve(int(args.serve[0]), args.serve[1], args.serve[2])
        return

    from webhook_sensor.inbox import Inbox

    tmp = Path(tempfile.mkdtemp(prefix="qpipe-bench-receiver-"))
    inbox_path = tmp / "inbox.sqlite"
    (tmp / "home").mkdir()
    port = _free_port()
    log = open(tmp / "receiver.log", "wb")  # noqa: SIM115 - the server's JSON logs, kept for inspection
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(inbox_path), str(tmp / "home")],
        cwd=REPO, stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit(
                        f"receiver did not start; see {tmp / 'receiver.log'}"
                    ) from None
                time.sleep(0.1)
        phases = [("bare", "/bare"), ("bare_asgi", "/bare-asgi"), ("verified", "/api/qstash")]
        if args.no_inbox_phase:
            phases.append(("no_inbox", NO_INBOX_PATH))
        for _, path in phases:
            _phase(port, path, "warm", 1, 8, 0.5)
        rounds: list[dict[str, dict]] = []
        for r in range(args.rounds):
            measured = {}
            for name, path in phases:
                cpu_before = _cpu_s(server.pid)
                phase = _phase(
                    port, path, f"{name}{r}-", args.clients, args.connections, args.seconds
                )
                phase["server_cpu_us"] = (
                    (_cpu_s(server.pid) - cpu_before) / max(phase["requests"], 1) * 1e6
                )
                measured[name] = phase
            rounds.append(measured)
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()

    def median(phase: str, key: str) -> float:
        return statistics.median(rnd[phase][key] for rnd in rounds)

    ratios = [rnd["verified"]["rps"] / rnd["bare"]["rps"] for rnd in rounds]
    asgi_ratios = [rnd["verified"]["rps"] / rnd["bare_asgi"]["rps"] for rnd in rounds]
    bare, bare_asgi, verified = (
        {key: median(phase, key) for key in ("rps", "p50_ms", "p99_ms", "server_cpu_us")}
        for phase in ("bare", "bare_asgi", "verified")
    )
    statuses: dict[int, int] = {}
    for rnd in rounds:
        for code, n in rnd["verified"]["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    stored = Inbox(inbox_path).count()
    verify_us, sdk_verify_us = _verify_timings(args.verify_iterations)
    print(
        f"bare endpoint:     {bare['rps']:8.0f} req/s  p50 {bare['p50_ms']:.2f} ms  p99 {bare['p99_ms']:.2f} ms"
    )
    print(
        f"bare raw ASGI:     {bare_asgi['rps']:8.0f} req/s  p50 {bare_asgi['p50_ms']:.2f} ms  p99 {bare_asgi['p99_ms']:.2f} ms"
    )
    print(
        f"verified + inbox:  {verified['rps']:8.0f} req/s  p50 {verified['p50_ms']:.2f} ms  p99 {verified['p99_ms']:.2f} ms  statuses {statuses}"
    )
    print(
        f"ratio vs bare:     {statistics.median(ratios):.2f}   (target >= 0.50; >= 2500 req/s);"
        f" vs raw ASGI bare {statistics.median(asgi_ratios):.2f};"
        f" per round {', '.join(f'{x:.2f}' for x in ratios)}"
    )
    print(
        f"server CPU:        {verified['server_cpu_us']:.1f} us/verified delivery vs"
        f" {bare['server_cpu_us']:.1f} us/bare, {bare_asgi['server_cpu_us']:.1f} us/raw ASGI bare"
    )
    print(
        f"verify alone:      ours {verify_us:.1f} us/call, qstash SDK {sdk_verify_us:.1f} us/call ({sdk_verify_us / verify_us:.1f}x)"
    )
    print(f"inbox rows stored: {stored} (warm-up included)")
    diagnostic: dict = {}
    if args.no_inbox_phase:
        no_inbox_ratios = [rnd["no_inbox"]["rps"] / rnd["bare"]["rps"] for rnd in rounds]
        diagnostic = {
            "no_inbox_rps": round(median("no_inbox", "rps"), 1),
            "ratio_no_inbox_vs_bare": round(statistics.median(no_inbox_ratios), 3),
            "ratio_no_inbox_vs_bare_rounds": [round(x, 3) for x in no_inbox_ratios],
            "no_inbox_server_cpu_us_per_req": round(median("no_inbox", "server_cpu_us"), 1),
        }
        print(
            f"without the inbox: {diagnostic['no_inbox_rps']:8.0f} req/s (diagnostic, not durable);"
            f" ratio vs bare {diagnostic['ratio_no_inbox_vs_bare']:.2f}"
        )
    print(
        json.dumps(
            {
                "verified_rps": round(verified["rps"], 1),
                "bare_rps": round(bare["rps"], 1),
                "ratio_vs_bare": round(statistics.median(ratios), 3),
                "ratio_vs_bare_rounds": [round(x, 3) for x in ratios],
                "verified_rps_rounds": [round(rnd["verified"]["rps"]) for rnd in rounds],
                "bare_rps_rounds": [round(rnd["bare"]["rps"]) for rnd in rounds],
                "server_cpu_us_rounds": [
                    round(rnd["verified"]["server_cpu_us"], 1) for rnd in rounds
                ],
                "bare_asgi_rps": round(bare_asgi["rps"], 1),
                "ratio_vs_bare_asgi": round(statistics.median(asgi_ratios), 3),
                "p50_ms": round(verified["p50_ms"], 3),
                "p99_ms": round(verified["p99_ms"], 3),
                "bare_p50_ms": round(bare["p50_ms"], 3),
                "bare_p99_ms": round(bare["p99_ms"], 3),
                "verified_statuses": statuses,
                "request_pool_exhausted": any(
                    p["exhausted"] for rnd in rounds for p in rnd.values()
                ),
                "inbox_rows": stored,
                "server_cpu_us_per_req": round(verified["server_cpu_us"], 1),
                "bare_server_cpu_us_per_req": round(bare["server_cpu_us"], 1),
                "bare_asgi_server_cpu_us_per_req": round(bare_asgi["server_cpu_us"], 1),
                "loadavg_1m": round(os.getloadavg()[0], 2),
                "verify_us": round(verify_us, 2),
                "sdk_verify_us": round(sdk_verify_us, 2),
                "verify_speedup_vs_sdk": round(sdk_verify_us / verify_us, 2),
                "rounds": args.rounds,
                "seconds_per_phase": args.seconds,
                "connections": args.connections,
                "client_processes": args.clients,
                "cpu_count": os.cpu_count(),
                **diagnostic,
            }
        )
    )


if __name__ == "__main__":
    main()
