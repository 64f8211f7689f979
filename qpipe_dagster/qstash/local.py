"""Local mode: deliver a message straight to the receiver, signed as QStash would sign it.

Mirrors QStash's behaviour: one message id for all attempts, `Upstash-Retried` counting them,
a fresh signature each attempt, retries on any non-2xx except a 489 marked non-retryable, and
429/503 `Retry-After` honoured.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import httpx

from qpipe_dagster.qstash.signing import sign_delivery


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
    raw = resp.headers.get("retry-after", "")
    return min(float(raw), 30.0) if raw.isdigit() else default


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
    """POST `body` to the receiver at `url`; raise DeliveryError when it never answers 2xx."""
    message_id = message_id or new_message_id()
    own = client is None
    http = client or httpx.Client(timeout=timeout_s)
    last = "no attempt made"
    try:
        for attempt in range(retries + 1):
            headers = {
                "Content-Type": "application/json",
                "Upstash-Signature": sign_delivery(signing_key, url, body),
                "Upstash-Message-Id": message_id,
                "Upstash-Retried": str(attempt),
            }
            wait = backoff_s * (2**attempt)
            try:
                resp = http.post(url, content=body, headers=headers)
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
    raise DeliveryError(f"message {message_id} not accepted: {last}")


def _body(resp: httpx.Response) -> dict:
    try:
        data = resp.json()
    except ValueError:
        return {"text": resp.text[:200]}
    return data if isinstance(data, dict) else {"value": data}
