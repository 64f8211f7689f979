"""Dagster retries for transient errors only.

`concept_pipeline` has a RetryPolicy (exponential backoff with jitter), and Dagster retries any
exception a step raises under it, a bad URL or a damaged table included. `transient_only`, on
each concept asset, lets only transient errors through to the policy (a refused or reset
connection, a timeout, a 429/5xx, PostgreSQL restarting, an open circuit breaker after its
reset time: `qpipe_dagster.resilience.transient`); every other error becomes a Failure with
retries off, so bad input fails once, at once, with its own message.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from dagster import Backoff, Failure, Jitter, RetryPolicy

from qpipe_dagster.resilience.guard import CircuitOpenError
from qpipe_dagster.resilience.transient import is_transient

TRANSIENT_RETRY_POLICY = RetryPolicy(
    max_retries=3, delay=10, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)


def _no_retry(exc: Exception) -> Exception:
    if isinstance(exc, CircuitOpenError) or is_transient(exc):
        return exc  # the policy retries it
    if isinstance(exc, Failure):
        if not exc.allow_retries:
            return exc
        return Failure(description=exc.description, metadata=exc.metadata, allow_retries=False)
    return Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False)


def transient_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an asset's function (plain or generator) so only transient errors are retried."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                mapped = _no_retry(exc)
                if mapped is exc:
                    raise
                raise mapped from exc

        return generator

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            mapped = _no_retry(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    return plain
