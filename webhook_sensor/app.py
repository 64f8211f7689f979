"""The QStash receiver: `uvicorn webhook_sensor.app:app`.

POST /api/qstash verifies the delivery's signature on the raw bytes, validates the concept
message, commits it to the durable inbox and only then answers 2xx. Permanent problems answer
489 + `Upstash-NonRetryable-Error: true` (QStash dead-letters them); transient ones answer 5xx
or 429 so QStash retries. GET /health, /ready and /metrics are for operators.

The delivery path is served as a plain ASGI callable (`DeliveryEndpoint`) straight from
`ReceiverApp`, without Starlette's Request/Response objects, middleware and router: at thousands
of deliveries a second those cost more than verifying, validating and storing. Every other path,
and any other method on /api/qstash (405), goes to Starlette as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import traceback
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from qpipe_dagster.crawl.addresses import seed_url_fault
from qpipe_dagster.paths import dagster_home as env_dagster_home
from qpipe_dagster.paths import state_paths_under
from qpipe_dagster.resilience.breakers import breaker_db, by_system, read_states
from webhook_sensor.inbox import (
    InboxRecord,
    InboxTarget,
    InboxUnavailable,
    describe_target,
    is_postgres_url,
    open_inbox,
)
from webhook_sensor.inbox.process import ProcessCommitWriter
from webhook_sensor.jsonlog import JsonLogger, get_logger, log_event
from webhook_sensor.limits import BodyTooLarge, ClientDisconnected, TokenBucket, read_body
from webhook_sensor.metrics import Metrics
from webhook_sensor.payload import PayloadError, parse_concept_message
from webhook_sensor.settings import Settings
from webhook_sensor.verify import SignatureVerifier, VerifyError

if TYPE_CHECKING:  # Dagster is imported when /ready first asks for the instance (a slow import)
    from dagster import DagsterInstance

RECEIVER_PATH = "/api/qstash"
NON_RETRYABLE = {"Upstash-NonRetryable-Error": "true"}
_STORED_HEADERS = ("upstash-retried", "upstash-schedule-id", "x-forwarded-for", "user-agent")
_STORED_HEADER_KEYS = tuple((name, name.encode("latin-1")) for name in _STORED_HEADERS)
_NON_RETRYABLE_RAW = [
    (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in NON_RETRYABLE.items()
]
_OUTCOMES = {200: "stored", 401: "unauthorized", 413: "too_large", 429: "rate_limited",
             489: "rejected", 499: "disconnected"}  # fmt: skip
CLIENT_GONE = 499  # no response sent: the client disconnected mid-body (metrics only)
MAX_MESSAGE_ID_LEN = 200


@dataclass
class ReceiverState:
    settings: Settings
    verifier: SignatureVerifier
    inbox_path: InboxTarget  # SQLite file or postgresql:// URL
    dagster_home: Path
    bucket: TokenBucket
    metrics: Metrics
    logger: JsonLogger
    writer: ProcessCommitWriter | None = None
    dagster_instance: DagsterInstance | None = None
    loop: asyncio.AbstractEventLoop | None = None  # the server's loop, known from the lifespan


def _json(status: int, payload: dict, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _resolve_paths(settings: Settings) -> tuple[InboxTarget, Path]:
    home = settings.dagster_home or env_dagster_home()
    return settings.inbox_url or settings.inbox_path or state_paths_under(home).inbox, home


def create_app(
    settings: Settings | None = None, extra_routes: Sequence[BaseRoute] = ()
) -> ReceiverApp:
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
        # Commits run in a child process with its own GIL (see inbox_process).
        state.writer = ProcessCommitWriter(inbox_path)
        state.loop = asyncio.get_running_loop()
        log_event(
            state.logger,
            logging.WARNING if settings.using_dev_keys else logging.INFO,
            "receiver_started" + ("_with_public_dev_keys" if settings.using_dev_keys else ""),
            receiver_url=settings.receiver_url,
            inbox=describe_target(inbox_path),
            dev_keys=settings.using_dev_keys,
        )
        try:
            yield
        finally:
            await state.writer.aclose()
            state.logger.flush()

    async def health(_request: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def ready(_request: Request) -> Response:
        problems = await _readiness_problems(state)
        breakers = _breaker_states(state.dagster_home)
        if breakers.get("postgres") == "open" and is_postgres_url(inbox_path):
            problems.append("circuit open: postgres (the inbox)")
        if problems:
            return _json(503, {"status": "not_ready", "problems": problems, "breakers": breakers})
        return _json(200, {"status": "ready", "breakers": breakers})

    async def metrics(_request: Request) -> Response:
        text = state.metrics.render(lambda: open_inbox(inbox_path).depth())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    deliver = DeliveryEndpoint(state)
    routes = [
        Route(RECEIVER_PATH, deliver, methods=["POST"]),  # other methods: Starlette's 405
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *extra_routes,
    ]
    starlette = Starlette(routes=routes, lifespan=lifespan)
    starlette.state.receiver = state
    return ReceiverApp(starlette, deliver)


class ReceiverApp:
    """The ASGI app: `POST /api/qstash` goes straight to the delivery endpoint, the rest (operator
    endpoints, other methods, lifespan) to Starlette, whose `state` and `routes` it exposes."""

    def __init__(self, starlette: Starlette, deliver: DeliveryEndpoint) -> None:
        self.starlette = starlette
        self.deliver = deliver

    @property
    def state(self) -> Any:
        return self.starlette.state

    @property
    def routes(self) -> list[BaseRoute]:
        return self.starlette.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            root = scope.get("root_path")
            if root and path.startswith(root):
                path = path[len(root) :]
            if path == RECEIVER_PATH:
                await self.deliver(scope, receive, send)
                return
        await self.starlette(scope, receive, send)


class DeliveryEndpoint:
    """`POST /api/qstash` as a raw ASGI callable; records the outcome and latency of each one."""

    def __init__(self, state: ReceiverState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        started = time.perf_counter()
        try:
            status = await _deliver(state, scope, receive, send)
        except Exception as exc:  # a bug, not a bad request: answer 500 so QStash retries
            status = 500
            state.logger.event(
                logging.ERROR, "internal_error", message_id=_message_id(scope),
                error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=20),
            )  # fmt: skip
            # If a response had already begun, the server refuses a second start: nothing to do.
            with contextlib.suppress(Exception):
                await _reply(send, 500, b'{"error":"internal_error"}')
        outcome = _OUTCOMES.get(status) or ("error" if status >= 500 else str(status))
        state.metrics.delivery(outcome, time.perf_counter() - started)


async def _reply(
    send: Send, status: int, body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()
) -> int:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-length", str(len(body)).encode("ascii")),
                (b"content-type", b"application/json"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
    return status


def _json_bytes(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _message_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"upstash-message-id":
            return value.decode("latin-1")
    return ""


async def _deliver(state: ReceiverState, scope: Scope, receive: Receive, send: Send) -> int:
    """Answer one delivery; returns the status sent (CLIENT_GONE when none could be)."""
    log = state.logger
    raw_headers = scope["headers"]
    if not isinstance(raw_headers, list):  # the ASGI spec allows any iterable
        raw_headers = list(raw_headers)
    headers = dict(reversed(raw_headers))  # names are lower-case; first occurrence wins
    raw_id = headers.get(b"upstash-message-id")
    message_id = raw_id.decode("latin-1") if raw_id is not None else ""
    wait = state.bucket.take()
    if wait:
        retry_after = TokenBucket.retry_after_header(wait).encode("ascii")
        return await _reply(send, 429, b'{"error":"rate_limited"}', [(b"retry-after", retry_after)])
    limit = state.settings.max_body_bytes
    declared = headers.get(b"content-length", b"")
    try:
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(limit)
        body = await read_body(receive, limit)
    except BodyTooLarge:
        log_event(log, logging.WARNING, "body_too_large", message_id=message_id, limit=limit)
        return await _reply(
            send, 413, _json_bytes({"error": "body_too_large", "limit_bytes": limit})
        )
    except ClientDisconnected:
        log_event(log, logging.WARNING, "client_disconnected", message_id=message_id)
        return CLIENT_GONE
    signature = headers.get(b"upstash-signature")
    try:
        state.verifier.verify(None if signature is None else signature.decode("latin-1"), body)
    except VerifyError as exc:
        state.metrics.verify_failures[exc.reason] += 1
        log_event(
            log, logging.WARNING, "verify_failed", message_id=message_id, reason=exc.reason,
            detail=exc.detail,
        )  # fmt: skip
        return await _reply(send, 401, _json_bytes({"error": exc.reason}))
    if not message_id or len(message_id) > MAX_MESSAGE_ID_LEN:
        why = (
            f"Upstash-Message-Id is {len(message_id)} characters; at most {MAX_MESSAGE_ID_LEN}"
            if message_id
            else "Upstash-Message-Id header is missing or empty"
        )
        log_event(log, logging.WARNING, "message_id_rejected", message_id=message_id, detail=why)
        payload = _json_bytes({"error": "invalid_message_id", "detail": why})
        return await _reply(send, 489, payload, _NON_RETRYABLE_RAW)
    try:
        msg = parse_concept_message(body)
    except PayloadError as exc:
        log_event(log, logging.WARNING, "payload_rejected", message_id=message_id, detail=str(exc))
        payload = _json_bytes({"error": "invalid_payload", "detail": str(exc)})
        return await _reply(send, 489, payload, _NON_RETRYABLE_RAW)
    if state.settings.public_seeds_only:
        detail = _private_seed(msg.normalized.seed_urls)
        if detail:
            log_event(
                log, logging.WARNING, "payload_rejected", message_id=message_id, detail=detail
            )
            payload = _json_bytes({"error": "invalid_payload", "detail": detail})
            return await _reply(send, 489, payload, _NON_RETRYABLE_RAW)
    retried = headers.get(b"upstash-retried", b"0")
    schedule_id = headers.get(b"upstash-schedule-id")
    client = scope.get("client")
    concept = msg.normalized
    record = InboxRecord(
        message_id=message_id,
        body=body,
        slug=concept.slug,
        concept_name=concept.name,
        seed_urls=concept.seed_urls,
        symbol=concept.symbol,
        # At most 9 digits: a larger count is no count (PostgreSQL's INTEGER stops at 2**31 and
        # SQLite's at 2**63, and one unstorable row would fail its whole group commit). The raw
        # header is kept in `headers` either way.
        retried=int(retried) if retried.isdigit() and len(retried) <= 9 else 0,
        schedule_id=None if schedule_id is None else schedule_id.decode("latin-1"),
        caller_ip=client[0] if client else None,
        headers={
            name: headers[key].decode("latin-1")
            for name, key in _STORED_HEADER_KEYS
            if key in headers
        },
    )
    try:
        assert state.writer is not None, "receiver started without its lifespan"
        is_new = await state.writer.submit(record, state.loop)
    except InboxUnavailable as exc:
        log_event(log, logging.ERROR, "inbox_unavailable", message_id=message_id, detail=str(exc))
        return await _reply(send, 503, b'{"error":"inbox_unavailable"}', [(b"retry-after", b"5")])
    status = "stored" if is_new else "duplicate"
    log.delivery("delivery_" + status, message_id, concept.slug)
    return await _reply(
        send,
        200,
        f'{{"status":"{status}","message_id":{_quote(message_id)},"concept":{_quote(concept.slug)}}}'
        .encode("ascii"),
    )  # fmt: skip


def _private_seed(urls: Sequence[str]) -> str | None:
    """With QPIPE_CRAWL_PRIVATE_ADDRESSES=refuse: the first seed URL that is certainly not public
    (an IP literal or a localhost name; other names are checked by the crawler's resolver)."""
    for url in urls:
        why = seed_url_fault(url)
        if why:
            return (
                f"seed URL {url!r}: {why}; this receiver takes public addresses only"
                " (QPIPE_CRAWL_PRIVATE_ADDRESSES=refuse)"
            )
    return None


def _check_dagster(state: ReceiverState) -> None:
    from dagster import DagsterInstance  # heavy import, only paid when /ready is asked

    if state.dagster_instance is None:
        if not state.dagster_home.is_dir():
            raise RuntimeError(f"DAGSTER_HOME {state.dagster_home} does not exist")
        state.dagster_instance = DagsterInstance.from_config(str(state.dagster_home))
    state.dagster_instance.get_runs_count()


def _breaker_states(dagster_home: Path) -> dict[str, str]:
    """Each outside system's circuit breaker state, shared by every qpipe process of this
    DAGSTER_HOME (closed when never used); unreadable state is reported as such, never a 500."""
    try:
        import os

        stored = by_system(
            read_states(breaker_db({**os.environ, "DAGSTER_HOME": str(dagster_home)}))
        )
    except Exception as exc:  # a damaged state file must not take /ready down
        return {"error": type(exc).__name__}
    return {
        s: stored[s].state if s in stored else "closed" for s in ("postgres", "qstash", "weaviate")
    }


async def _readiness_problems(state: ReceiverState) -> list[str]:
    """Short problem names for the probe's answer; the full reasons (paths, the database's own
    words) go to the log only, as /ready may be reachable from outside."""
    problems, details = [], []
    try:
        await asyncio.to_thread(lambda: open_inbox(state.inbox_path).check_writable())
    except Exception as exc:
        problems.append(f"inbox not writable: {type(exc).__name__}")
        details.append(f"inbox {describe_target(state.inbox_path)}: {type(exc).__name__}: {exc}")
    try:
        await asyncio.wait_for(asyncio.to_thread(_check_dagster, state), timeout=15)
    except Exception as exc:
        state.dagster_instance = None
        problems.append(f"dagster instance unreachable: {type(exc).__name__}")
        details.append(f"DAGSTER_HOME {state.dagster_home}: {type(exc).__name__}: {exc}")
    if details:
        log_event(state.logger, logging.WARNING, "not_ready", problems=details)
    return problems


class _LazyApp:
    """`webhook_sensor.app:app` reads the environment when uvicorn first calls it, not at import.

    A setting it cannot use fails the server's start-up with the setting's own message. Raised
    from the lifespan call instead, uvicorn took it for "lifespan unsupported", ran on, and
    answered every request with a 500 and a traceback.
    """

    def __init__(self) -> None:
        self._app: ReceiverApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            try:
                self._app = create_app()
            except Exception as exc:
                if scope["type"] != "lifespan":
                    raise
                await receive()  # lifespan.startup
                why = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                await send({"type": "lifespan.startup.failed", "message": f"qpipe receiver: {why}"})
                return
        await self._app(scope, receive, send)


app = _LazyApp()
