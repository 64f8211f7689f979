"""One call to an outside system, retried on transient errors and guarded by its breaker.

    guarded_call("postgres", conn_fn, ...)      # or @guarded("weaviate") on a function

Transient errors (see `transient.is_transient`) are retried with exponential backoff and full
jitter (tenacity), so a restarting PostgreSQL or a Weaviate answering 503 for a few seconds costs
a few seconds, not a failed run. A call whose retries are all spent counts one failure against
the system's breaker; after FAIL_MAX of those the breaker opens and calls fail at once with
CircuitOpenError (naming the system and when it opened) until RESET_TIMEOUT_S has passed, so a
system that is down is not hammered by every step and sensor tick. Errors that are the caller's
fault (bad input, 4xx) pass straight through: not retried, not counted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, TypeVar

import pybreaker
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from qpipe_dagster.resilience.breakers import breaker
from qpipe_dagster.resilience.transient import is_transient

P = ParamSpec("P")
T = TypeVar("T")

ATTEMPTS = 5  # first try + 4 retries
MAX_WAIT_S = 8.0  # one backoff step at most
DEADLINE_S = 30.0  # all retries of one call together


class CircuitOpenError(ConnectionError):
    """The system's breaker is open: the call was not made. Says which system and since when."""


def guarded_call(
    system: str,
    fn: Callable[P, T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """fn(*args, **kwargs) with retries on transient errors, through `system`'s breaker."""
    cb = breaker(system)

    def with_retries() -> T:
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential_jitter(initial=0.2, max=MAX_WAIT_S),
            stop=stop_after_attempt(ATTEMPTS) | stop_after_delay(DEADLINE_S),
            reraise=True,
        )
        return retrying(fn, *args, **kwargs)

    try:
        return cb.call(with_retries)
    except pybreaker.CircuitBreakerError:
        raise _open_error(system, cb) from None


def breaker_call(system: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """fn through `system`'s breaker only, for callers that retry by themselves."""
    cb = breaker(system)
    try:
        return cb.call(fn, *args, **kwargs)
    except pybreaker.CircuitBreakerError:
        raise _open_error(system, cb) from None


def _open_error(system: str, cb: pybreaker.CircuitBreaker) -> CircuitOpenError:
    opened = cb._state_storage.opened_at  # shared state: when any process opened it
    since = f" since {opened.astimezone(UTC).isoformat(timespec='seconds')}" if opened else ""
    retry = opened + timedelta(seconds=cb.reset_timeout) if opened else None
    until = f" until {retry.astimezone(UTC).isoformat(timespec='seconds')}" if retry else ""
    return CircuitOpenError(
        f"circuit breaker for {system} is open{since} after {cb.fail_max} failed calls in a"
        f" row: calls are refused{until} ({cb.reset_timeout:.0f} s after it opened), then one trial"
        f" call is let through. `qpipe doctor` shows {system.split('@', 1)[0]}'s state"
    )


def guarded(system: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    def wrap(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> T:
            return guarded_call(system, fn, *args, **kwargs)

        return inner

    return wrap


def describe(state: str, opened_at: float | None, fail_counter: int) -> str:
    """One line for /ready and `qpipe doctor`."""
    if state == pybreaker.STATE_OPEN and opened_at:
        when = datetime.fromtimestamp(opened_at, UTC).isoformat(timespec="seconds")
        return f"open since {when} ({fail_counter} failed calls)"
    if state == pybreaker.STATE_HALF_OPEN:
        return "half-open (one trial call allowed)"
    return f"closed ({fail_counter} recent failures)" if fail_counter else "closed"
