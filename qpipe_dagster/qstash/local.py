"""Local mode: deliver a message straight to the receiver, signed as QStash would sign it.

Mirrors QStash's behaviour, so what works locally works behind QStash: one message id for all
attempts, `Upstash-Retried` counting them, a fresh signature each attempt, a retry on network
errors and on every non-2xx answer except a 489 marked `Upstash-NonRetryable-Error: true`, and
429/503 `Retry-After` honoured (seconds or HTTP-date). Each wait is capped at MAX_WAIT_S and the
URL, message id and retry settings are checked before the first attempt.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass

import httpx

from qpipe_dagster.qstash.checks import (
    QStashInputError,
    header_value,
    http_url,
    retry_after_s,
    whole_number,
)
from qpipe_dagster.qstash.signing import sign_delivery

MAX_WAIT_S = 30.0  # one backoff or Retry-After wait, at most
MAX_RETRIES = 10
MAX_MESSAGE_ID_LEN = 200  # the receiver refuses longer ids (489 invalid_message_id)


class DeliveryError(RuntimeError):
    """The receiver did not accept the message; says what it answered last."""


@dataclass(frozen=True)
class LocalDelivery:
    message_id: str
    status_code: int
    attempts: int
    response: dict


def new_message_id() -> str:
    return "msg_local_" + uuid.uuid4().hex


def _retry_after(resp: httpx.Response, default: float) -> float:
    value = retry_after_s(resp.headers.get("retry-after"))
    return default if value is None else min(value, MAX_WAIT_S)


def deliver_locally(
    url: str,
    body: bytes,
    *,
    signing_key: str,
    message_id: str | None = None,
    retries: int = 3,
    backoff_s: float = 0.5,
    timeout_s: float = 10.0,
    client: httpx.Client | None = None,
) -> LocalDelivery:
    """POST `body` to the receiver at `url`; raise DeliveryError when it never answers 2xx.

    A bad URL, message id, retry count or backoff raises QStashInputError (a ValueError) before
    any attempt: an unsendable id used to be retried as "cannot reach the receiver", and a large
    retry count overflowed the backoff.
    """
    http_url("receiver URL", url)
    if message_id is not None:
        header_value("message id", message_id, max_len=MAX_MESSAGE_ID_LEN)
    whole_number("retries", retries, 0, MAX_RETRIES)
    if (
        isinstance(backoff_s, bool)
        or not isinstance(backoff_s, int | float)
        or not (math.isfinite(backoff_s) and backoff_s >= 0)
    ):
        raise QStashInputError(f"backoff must be a number of seconds >= 0, got {backoff_s!r}")
    message_id = message_id or new_message_id()
    own = client is None
    http = client or httpx.Client(timeout=timeout_s)
    last = "no attempt made"
    attempt = 0
    try:
        for attempt in range(retries + 1):
            headers = {
                "Content-Type": "application/json",
                "Upstash-Signature": sign_delivery(signing_key, url, body),
                "Upstash-Message-Id": message_id,
                "Upstash-Retried": str(attempt),
            }
            wait = min(backoff_s * (2**attempt), MAX_WAIT_S)
            try:
                resp = http.post(url, content=body, headers=headers)
            except httpx.TimeoutException as exc:
                last = f"the receiver at {url} did not answer in time ({type(exc).__name__})"
            except httpx.HTTPError as exc:
                last = f"cannot reach the receiver at {url}: {exc}"
            else:
                if resp.is_success:
                    return LocalDelivery(message_id, resp.status_code, attempt + 1, _body(resp))
                detail = _body(resp)
                last = f"receiver answered {resp.status_code}: {detail.get('detail') or detail}"
                if resp.headers.get("upstash-nonretryable-error", "").lower() == "true":
                    break
                if resp.status_code in (429, 503):
                    wait = _retry_after(resp, wait)
            if attempt < retries:
                time.sleep(wait)
    finally:
        if own:
            http.close()
    raise DeliveryError(f"message {message_id} not accepted after {attempt + 1} attempt(s): {last}")


def _body(resp: httpx.Response) -> dict:
    try:
        data = resp.json()
    except ValueError:
        return {"text": resp.text[:200]}
    return data if isinstance(data, dict) else {"value": data}
