"""Per-process admission limits: a token-bucket rate limit and a streaming body-size cap."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator

from starlette.types import Receive


class TokenBucket:
    """`rate` requests per second with a burst of one second's worth; not thread-safe (one loop)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if not 0 < rate < math.inf:  # a NaN rate never refilled yet never refused either
            raise ValueError(f"rate limit must be a positive finite number, got {rate}")
        self.rate = float(rate)
        self.capacity = float(burst if burst is not None else max(1.0, rate))
        self._tokens = self.capacity
        self._stamp = time.monotonic()

    def take(self) -> float:
        """Take a token: 0.0 when allowed, else the seconds to wait (for Retry-After)."""
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    @staticmethod
    def retry_after_header(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))


class ClientDisconnected(Exception):
    """The client went away before its request body was complete; there is no one to answer."""


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


async def read_capped(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """Read a request body but stop as soon as it passes `limit` bytes (never buffer more)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        parts.append(chunk)
    return b"".join(parts)


async def read_body(receive: Receive, limit: int) -> bytes:
    """Read an ASGI request body straight from `receive`, stopping once it passes `limit` bytes.

    The usual single-message body is returned as is (no copy); the cap applies to the running
    total, so a body streamed in many small chunks is cut off just the same.
    """
    message = await receive()
    if message["type"] != "http.request":
        raise ClientDisconnected()
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise BodyTooLarge(limit)
    if not message.get("more_body", False):
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)
