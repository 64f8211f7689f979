"""The QStash receiver: `uvicorn webhook_sensor.app:app`.

POST /api/qstash verifies the delivery's signature on the raw bytes, validates the concept
message, commits it to the durable inbox and only then answers 2xx. Permanent problems answer
489 + `Upstash-NonRetryable-Error: true` (QStash dead-letters them); transient ones answer 5xx
or 429 so QStash retries. GET /health, /ready and /metrics are for operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from qpipe_dagster.paths import dagster_home as env_dagster_home
from webhook_sensor.inbox import GroupCommitWriter, Inbox, InboxRecord, InboxUnavailable
from webhook_sensor.jsonlog import JsonLogger, get_logger, log_event
from webhook_sensor.limits import BodyTooLarge, TokenBucket, read_capped
from webhook_sensor.metrics import Metrics
from webhook_sensor.payload import PayloadError, parse_concept_message
from webhook_sensor.settings import Settings
from webhook_sensor.verify import SignatureVerifier, VerifyError

RECEIVER_PATH = "/api/qstash"
NON_RETRYABLE = {"Upstash-NonRetryable-Error": "true"}
_STORED_HEADERS = ("upstash-retried", "upstash-schedule-id", "x-forwarded-for", "user-agent")


@dataclass
class ReceiverState:
    settings: Settings
    verifier: SignatureVerifier
    inbox_path: Path
    dagster_home: Path
    bucket: TokenBucket
    metrics: Metrics
    logger: JsonLogger
    writer: GroupCommitWriter | None = None
    dagster_instance: object | None = None


def _json(status: int, payload: dict, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _resolve_paths(settings: Settings) -> tuple[Path, Path]:
    home = settings.dagster_home or env_dagster_home()
    return settings.inbox_path or home / "qpipe" / "inbox.sqlite", home


def create_app(
    settings: Settings | None = None, extra_routes: Sequence[BaseRoute] = ()
) -> Starlette:
    """Build the receiver for these settings (default: from the environment)."""
    settings = settings or Settings.from_env()
    inbox_path, home = _resolve_paths(settings)
    state = ReceiverState(
        settings=settings,
        verifier=SignatureVerifier(
            settings.current_signing_key,
            settings.next_signing_key,
            settings.receiver_url,
            settings.clock_tolerance_s,
        ),
        inbox_path=inbox_path,
        dagster_home=home,
        bucket=TokenBucket(settings.rate_limit_per_s),
        metrics=Metrics(),
        logger=get_logger(),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        state.writer = GroupCommitWriter(inbox_path)
        log_event(
            state.logger,
            logging.WARNING if settings.using_dev_keys else logging.INFO,
            "receiver_started" + ("_with_public_dev_keys" if settings.using_dev_keys else ""),
            receiver_url=settings.receiver_url,
            inbox=str(inbox_path),
            dev_keys=settings.using_dev_keys,
        )
        try:
            yield
        finally:
            state.writer.close()

    async def receive(request: Request) -> Response:
        started = time.perf_counter()
        response = await _receive(state, request)
        state.metrics.delivery(_outcome(response.status_code), time.perf_counter() - started)
        return response

    async def health(_request: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def ready(_request: Request) -> Response:
        problems = await _readiness_problems(state)
        if problems:
            return _json(503, {"status": "not_ready", "problems": problems})
        return _json(200, {"status": "ready"})

    async def metrics(_request: Request) -> Response:
        text = state.metrics.render(lambda: Inbox(inbox_path).depth())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    routes = [
        Route(RECEIVER_PATH, receive, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *extra_routes,
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.receiver = state
    return app


def _outcome(status: int) -> str:
    return {
        200: "stored",
        401: "unauthorized",
        413: "too_large",
        429: "rate_limited",
        489: "rejected",
    }.get(status, "error" if status >= 500 else str(status))


async def _receive(state: ReceiverState, request: Request) -> Response:
    log = state.logger
    message_id = request.headers.get("upstash-message-id", "")
    wait = state.bucket.take()
    if wait:
        return _json(
            429, {"error": "rate_limited"}, {"Retry-After": TokenBucket.retry_after_header(wait)}
        )
    limit = state.settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    try:
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(limit)
        body = await read_capped(request.stream(), limit)
    except BodyTooLarge:
        log_event(log, logging.WARNING, "body_too_large", message_id=message_id, limit=limit)
        return _json(413, {"error": "body_too_large", "limit_bytes": limit})
    try:
        state.verifier.verify(request.headers.get("upstash-signature"), body)
    except VerifyError as exc:
        state.metrics.verify_failures[exc.reason] += 1
        log_event(
            log, logging.WARNING, "verify_failed", message_id=message_id, reason=exc.reason,
            detail=exc.detail,
        )  # fmt: skip
        return _json(401, {"error": exc.reason})
    if not message_id or len(message_id) > 200:
        return _json(489, {"error": "invalid_message_id"}, NON_RETRYABLE)
    try:
        msg = parse_concept_message(body)
    except PayloadError as exc:
        log_event(log, logging.WARNING, "payload_rejected", message_id=message_id, detail=str(exc))
        return _json(489, {"error": "invalid_payload", "detail": str(exc)}, NON_RETRYABLE)
    headers = request.headers
    retried = headers.get("upstash-retried", "0")
    record = InboxRecord(
        message_id=message_id,
        body=body,
        slug=msg.slug,
        concept_name=msg.normalized.name,
        seed_urls=msg.normalized.seed_urls,
        symbol=msg.normalized.symbol,
        retried=int(retried) if retried.isdigit() else 0,
        schedule_id=headers.get("upstash-schedule-id"),
        caller_ip=request.client.host if request.client else None,
        headers={k: headers[k] for k in _STORED_HEADERS if k in headers},
    )
    try:
        assert state.writer is not None, "receiver started without its lifespan"
        is_new = await state.writer.submit(record)
    except InboxUnavailable as exc:
        log_event(log, logging.ERROR, "inbox_unavailable", message_id=message_id, detail=str(exc))
        return _json(503, {"error": "inbox_unavailable"}, {"Retry-After": "5"})
    status = "stored" if is_new else "duplicate"
    log_event(log, logging.INFO, "delivery_" + status, message_id=message_id, concept=msg.slug)
    return _json(200, {"status": status, "message_id": message_id, "concept": msg.slug})


def _check_dagster(state: ReceiverState) -> None:
    from dagster import DagsterInstance  # heavy import, only paid when /ready is asked

    if state.dagster_instance is None:
        if not state.dagster_home.is_dir():
            raise RuntimeError(f"DAGSTER_HOME {state.dagster_home} does not exist")
        state.dagster_instance = DagsterInstance.from_config(str(state.dagster_home))
    state.dagster_instance.get_runs_count()  # type: ignore[attr-defined]


async def _readiness_problems(state: ReceiverState) -> list[str]:
    problems = []
    try:
        await asyncio.to_thread(lambda: Inbox(state.inbox_path).check_writable())
    except Exception as exc:
        problems.append(f"inbox not writable: {type(exc).__name__}")
    try:
        await asyncio.wait_for(asyncio.to_thread(_check_dagster, state), timeout=15)
    except Exception as exc:
        state.dagster_instance = None
        problems.append(f"dagster instance unreachable: {type(exc).__name__}")
    return problems


class _LazyApp:
    """`webhook_sensor.app:app` reads the environment when uvicorn first calls it, not at import."""

    def __init__(self) -> None:
        self._app: Starlette | None = None

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if self._app is None:
            self._app = create_app()
        await self._app(scope, receive, send)


app = _LazyApp()
