"""A small QStash emulator on loopback: the REST surface we call, delivering signed messages.

The real QStash is not reachable from tests; this server speaks its HTTP API (same paths,
headers and answers) and, like QStash, signs each delivery with PyJWT and POSTs it on.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from qpipe_dagster_tests.qstash.scripted import scripted  # noqa: F401  (fixture)
from qpipe_dagster_tests.webhook_sensor.conftest import (
    CURRENT,
    Receiver,
    ServerThread,
    free_port,
    make_token,
    start_receiver,
)

TOKEN = "test-qstash-token"


@dataclass
class QStashEmulator:
    base: str = ""
    published: list[dict] = field(default_factory=list)
    batches: list[list] = field(default_factory=list)
    schedules: dict[str, dict] = field(default_factory=dict)
    dlq: dict[str, dict] = field(default_factory=dict)
    retried: list[str] = field(default_factory=list)
    throttle_next: int = 0  # answer this many 429s first
    deliveries: list[int] = field(default_factory=list)

    def app(self) -> Starlette:
        ids = itertools.count(1)

        def authorised(request: Request) -> bool:
            return request.headers.get("authorization") == f"Bearer {TOKEN}"

        def throttled() -> Response | None:
            if self.throttle_next > 0:
                self.throttle_next -= 1
                return JSONResponse({"error": "too many requests"}, 429, {"Retry-After": "0"})
            return None

        async def deliver(dest: str, body: bytes, message_id: str) -> None:
            async with httpx.AsyncClient(timeout=10) as client:
                resp = await client.post(
                    dest,
                    content=body,
                    headers={
                        "Upstash-Signature": make_token(CURRENT, dest, body),
                        "Upstash-Message-Id": message_id,
                        "Upstash-Retried": "0",
                        "Content-Type": "application/json",
                    },
                )
            self.deliveries.append(resp.status_code)

        async def publish(request: Request) -> Response:
            if not authorised(request):
                return JSONResponse({"error": "unauthorized"}, 401)
            if (limited := throttled()) is not None:
                return limited
            dest = request.path_params["dest"]
            body = await request.body()
            mid = f"msg_emu_{next(ids)}"
            self.published.append({"dest": dest, "body": body, "headers": dict(request.headers)})
            return JSONResponse(
                {"messageId": mid}, background=BackgroundTask(deliver, dest, body, mid)
            )

        async def batch(request: Request) -> Response:
            items = await request.json()
            self.batches.append(items)
            return JSONResponse([{"messageId": f"msg_emu_{next(ids)}"} for _ in items])

        async def schedules(request: Request) -> Response:
            if request.method == "GET":
                return JSONResponse(list(self.schedules.values()))
            sid = request.headers.get("upstash-schedule-id") or f"scd_{next(ids)}"
            self.schedules[sid] = {
                "scheduleId": sid,
                "cron": request.headers["upstash-cron"],
                "destination": request.path_params["dest"],
                "body": (await request.body()).decode(),
            }
            return JSONResponse({"scheduleId": sid})

        async def schedule_delete(request: Request) -> Response:
            if self.schedules.pop(request.path_params["sid"], None) is None:
                return JSONResponse({"error": "schedule not found"}, 404)
            return Response(status_code=200)

        async def dlq_list(request: Request) -> Response:
            items = sorted(self.dlq.values(), key=lambda m: m["dlqId"])
            start = int(request.query_params.get("cursor", "0"))
            page = items[start : start + 2]
            out: dict = {"messages": page}
            if start + 2 < len(items):
                out["cursor"] = str(start + 2)
            return JSONResponse(out)

        async def dlq_retry(request: Request) -> Response:
            dlq_id = request.path_params["dlq_id"]
            if self.dlq.pop(dlq_id, None) is None:
                return JSONResponse({"error": "message not found"}, 404)
            self.retried.append(dlq_id)
            return JSONResponse({"messageId": f"msg_emu_{next(ids)}"})

        async def dlq_delete(request: Request) -> Response:
            if self.dlq.pop(request.path_params["dlq_id"], None) is None:
                return JSONResponse({"error": "message not found"}, 404)
            return Response(status_code=200)

        return Starlette(
            routes=[
                Route("/v2/publish/{dest:path}", publish, methods=["POST"]),
                Route("/v2/batch", batch, methods=["POST"]),
                Route("/v2/schedules", schedules, methods=["GET"]),
                Route("/v2/schedules/{sid}", schedule_delete, methods=["DELETE"]),
                Route("/v2/schedules/{dest:path}", schedules, methods=["POST"]),
                Route("/v2/dlq", dlq_list, methods=["GET"]),
                Route("/v2/dlq/retry/{dlq_id}", dlq_retry, methods=["POST"]),
                Route("/v2/dlq/{dlq_id}", dlq_delete, methods=["DELETE"]),
            ]
        )


@pytest.fixture
def qstash_emulator() -> Iterator[QStashEmulator]:
    emu = QStashEmulator()
    port = free_port()
    emu.base = f"http://127.0.0.1:{port}"
    with ServerThread(emu.app(), port):
        yield emu


@pytest.fixture
def live_receiver(tmp_path) -> Iterator[Receiver]:
    server, rcv = start_receiver(tmp_path)
    with server:
        yield rcv
    rcv.client.close()
