"""Which errors are transient: worth a retry, and counted against a system's circuit breaker."""

from __future__ import annotations

import errno
import socket

# HTTP answers that mean "try again later", not "your request is wrong"
TRANSIENT_HTTP_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
    }
)


def _http_status(exc: BaseException) -> int | None:
    for attr in ("status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


def is_transient(exc: BaseException) -> bool:
    """True for errors a later attempt may not meet: refused/reset connections, timeouts,
    5xx/429 answers, a PostgreSQL server that is down or restarting. Bad input, 4xx answers and
    programming errors are not: retrying them only delays the error the user must fix."""
    import pybreaker

    if isinstance(exc, pybreaker.CircuitBreakerError):
        return False  # the breaker itself: waiting is the breaker's job, not a retry's
    marked = getattr(exc, "transient", None)
    if isinstance(marked, bool):  # the raiser knows best (QStashError, InboxUnavailable, ...)
        return marked
    if _own_transient(exc):
        return True
    cause = exc.__cause__
    # a wrapper (QStashError, InboxUnavailable) raised from a transient error is transient
    return cause is not None and cause is not exc and _own_transient(cause)


# PostgreSQL SQLSTATEs worth another try: connection exceptions (08), admin/crash shutdown and
# "cannot connect now" (57P01-03), too many connections (53300), serialization and deadlock.
_PG_TRANSIENT = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01")
# libpq errors without a SQLSTATE that mean "the server is not there (yet)"
_PG_DOWN = (
    "connection refused",
    "could not connect",
    "server closed the connection",
    "terminating connection",
    "timeout expired",
    "the database system is starting up",
    "the database system is shutting down",
    "no route to host",
    "connection reset",
)


def _pg_transient(exc: BaseException) -> bool:
    code = getattr(exc, "pgcode", None)
    if code:
        return str(code).startswith(_PG_TRANSIENT)
    text = str(exc).lower()
    return any(marker in text for marker in _PG_DOWN)


def _own_transient(exc: BaseException, depth: int = 0) -> bool:
    mod = type(exc).__module__ or ""
    if mod.startswith("weaviate"):  # before the status check: its gRPC errors carry gRPC codes
        return _weaviate_transient(exc, depth)
    status = _http_status(exc)
    if status is not None:
        return status in TRANSIENT_HTTP_STATUS
    if isinstance(exc, ConnectionError | TimeoutError | socket.timeout | socket.gaierror):
        return True
    name = type(exc).__name__
    if mod.startswith("httpx") and name in {
        "ConnectError",
        "ReadError",
        "WriteError",
        "RemoteProtocolError",
        "ConnectTimeout",
        "ReadTimeout",
        "WriteTimeout",
        "PoolTimeout",
    }:
        return True
    if mod.startswith("psycopg2"):
        # server down, restarting, connection lost (not: a missing database, a bad password,
        # a read-only server, bad data: those are the caller's to fix)
        if name == "InterfaceError":
            return True  # the connection was closed under us
        return _pg_transient(exc)
    if mod.startswith("grpc") or name == "AioRpcError":
        code = getattr(exc, "code", None)
        text = str(code() if callable(code) else code)
        return "UNAVAILABLE" in text or "DEADLINE_EXCEEDED" in text
    if isinstance(exc, OSError):
        return exc.errno is not None and exc.errno in _TRANSIENT_ERRNOS
    return False


# weaviate-client v4 (weaviate.exceptions): the server or the way to it is down, slow or restarting
_WEAVIATE_DOWN = frozenset(
    {
        "WeaviateConnectionError",  # HTTP connect refused/failed
        "WeaviateTimeoutError",  # HTTP read timeout
        "WeaviateClosedClientError",
        "WeaviateRetryError",  # the client's own gRPC retries on UNAVAILABLE ran out
        "WeaviateGRPCUnavailableError",  # the gRPC health check failed (refused, not SERVING)
    }
)
# gRPC status codes a later attempt may not meet (UnexpectedStatusCodeError keeps the gRPC code
# of a gRPC error in status_code: 4 DEADLINE_EXCEEDED, 14 UNAVAILABLE)
_GRPC_TRANSIENT_CODES = frozenset({4, 14})
# what a whole failed fixed-size batch records per object: repr() of the exception it died of
_WEAVIATE_BATCH_DOWN = (
    *_WEAVIATE_DOWN,
    "StatusCode.UNAVAILABLE",
    "StatusCode.DEADLINE_EXCEEDED",
    "Deadline Exceeded",
)


def _weaviate_transient(exc: BaseException, depth: int) -> bool:
    """A weaviate-client error: down/slow/restarting (a refused connection, a timeout, HTTP
    5xx/429, gRPC UNAVAILABLE/DEADLINE_EXCEEDED) or the caller's fault (4xx, a schema or
    validation error, an unsupported server version)."""
    if type(exc).__name__ in _WEAVIATE_DOWN:
        return True
    status = _http_status(exc)  # UnexpectedStatusCodeError, ResponseCannotBeDecodedError
    if status is not None:
        return status in (_GRPC_TRANSIENT_CODES if status < 100 else TRANSIENT_HTTP_STATUS)
    # WeaviateQueryError, WeaviateBatchError, WeaviateDeleteManyError, WeaviateStartUpError:
    # raised while handling the gRPC or connection error that decides, often without `from`
    link = exc.__cause__ or exc.__context__
    return link is not None and depth < 4 and _own_transient(link, depth + 1)


def weaviate_batch_failure_transient(messages: list[str]) -> bool:
    """True when every object of a Weaviate fixed-size batch failed for a transient reason: the
    batch swallows the exception and keeps only its repr() per object. One object refused for
    its data (a validation error) makes the batch the caller's to fix."""
    return bool(messages) and all(
        any(marker in m for marker in _WEAVIATE_BATCH_DOWN) for m in messages
    )
