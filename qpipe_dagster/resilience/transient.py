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
    status = _http_status(exc)
    if status is not None:
        return status in TRANSIENT_HTTP_STATUS
    if isinstance(exc, ConnectionError | TimeoutError | socket.timeout | socket.gaierror):
        return True
    mod = type(exc).__module__ or ""
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
        # OperationalError: server down, restarting, connection lost; InterfaceError: the
        # connection was closed under us. Data and programming errors are the caller's.
        return name in {"OperationalError", "InterfaceError", "AdminShutdown", "CannotConnectNow"}
    if mod.startswith("weaviate"):
        return name in {
            "WeaviateConnectionError",
            "WeaviateTimeoutError",
            "WeaviateClosedClientError",
        } or ("UnexpectedStatusCode" in name and status in TRANSIENT_HTTP_STATUS)
    if mod.startswith("grpc") or name == "AioRpcError":
        code = getattr(exc, "code", None)
        text = str(code() if callable(code) else code)
        return "UNAVAILABLE" in text or "DEADLINE_EXCEEDED" in text
    if isinstance(exc, OSError):
        return exc.errno is not None and exc.errno in _TRANSIENT_ERRNOS
    return False
