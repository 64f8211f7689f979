"""A small QStash REST client (httpx): publish, batch, schedules and the dead-letter queue.

Pure of Dagster so the CLI can use it; `QStashResource` wraps it for assets. 429 answers are
retried with backoff (honouring Retry-After / Burst-RateLimit-Reset), as are network errors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_BASE_URL = "https://qstash.upstash.io"


class QStashError(RuntimeError):
    """QStash refused a request; the message carries its status and answer."""


@dataclass(frozen=True)
class PublishOptions:
    """Per-message delivery options, mapped one-to-one onto QStash's Upstash-* headers."""

    delay: str | int | None = None  # "10s", "5m" or seconds
    not_before: int | None = None  # unix seconds
    retries: int | None = None
    deduplication_id: str | None = None
    content_based_deduplication: bool | None = None
    callback: str | None = None
    failure_callback: str | None = None
    flow_control_key: str | None = None
    flow_control_parallelism: int | None = None
    flow_control_rate: int | None = None
    label: str | None = None
    forward_headers: Mapping[str, str] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        h: dict[str, str] = {}
        if self.delay is not None:
            h["Upstash-Delay"] = f"{self.delay}s" if isinstance(self.delay, int) else self.delay
        if self.not_before is not None:
            h["Upstash-Not-Before"] = str(int(self.not_before))
        if self.retries is not None:
            h["Upstash-Retries"] = str(int(self.retries))
        if self.deduplication_id:
            h["Upstash-Deduplication-Id"] = self.deduplication_id
        if self.content_based_deduplication is not None:
            h["Upstash-Content-Based-Deduplication"] = str(self.content_based_deduplication).lower()
        if self.callback:
            h["Upstash-Callback"] = self.callback
        if self.failure_callback:
            h["Upstash-Failure-Callback"] = self.failure_callback
        if self.flow_control_key:
            values = []
            if self.flow_control_parallelism is not None:
                values.append(f"parallelism={self.flow_control_parallelism}")
            if self.flow_control_rate is not None:
                values.append(f"rate={self.flow_control_rate}")
            h["Upstash-Flow-Control-Key"] = self.flow_control_key
            h["Upstash-Flow-Control-Value"] = ", ".join(values)
        if self.label:
            h["Upstash-Label"] = self.label
        for k, v in self.forward_headers.items():
            h[k if k.lower().startswith("upstash-forward-") else f"Upstash-Forward-{k}"] = str(v)
        return h


class QStashClient:
    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        timeout_s: float = 30.0,
    ) -> None:
        if not token:
            raise ValueError("QSTASH_TOKEN is empty; set it to publish through QStash")
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._http = httpx.Client(timeout=timeout_s, headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> QStashClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
        content: bytes | None = None, params: Mapping[str, str] | None = None,
    ) -> Any:  # fmt: skip
        url = self.base_url + path
        for attempt in range(self.max_retries + 1):
            wait = self.backoff_s * (2**attempt)
            try:
                resp = self._http.request(
                    method, url, headers=dict(headers or {}), content=content, params=params
                )
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise QStashError(f"cannot reach QStash at {self.base_url}: {exc}") from exc
            else:
                if resp.status_code != 429 and resp.status_code < 500:
                    return _result(resp)
                if attempt == self.max_retries:
                    _result(resp)
                if resp.status_code == 429:
                    wait = _rate_limit_wait(resp, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")

    # --- messages -------------------------------------------------------------------------
    def publish(
        self, url: str, body: bytes, *, content_type: str = "application/json",
        options: PublishOptions | None = None,
    ) -> dict:  # fmt: skip
        """Publish one message to `url`; returns QStash's answer ({"messageId": ...})."""
        headers = {"Content-Type": content_type, **(options or PublishOptions()).headers()}
        return self._request("POST", f"/v2/publish/{url}", headers=headers, content=body)

    def publish_json(self, url: str, payload: Any, options: PublishOptions | None = None) -> dict:
        return self.publish(url, json.dumps(payload).encode(), options=options)

    def batch(self, messages: Sequence[tuple[str, bytes, PublishOptions | None]]) -> list:
        """Publish several (url, body, options) messages in one request."""
        items = [
            {
                "destination": url,
                "headers": {
                    "Content-Type": "application/json",
                    **(opts or PublishOptions()).headers(),
                },
                "body": body.decode("utf-8"),
            }
            for url, body, opts in messages
        ]
        return self._request(
            "POST", "/v2/batch", headers={"Content-Type": "application/json"},
            content=json.dumps(items).encode(),
        )  # fmt: skip

    # --- schedules ------------------------------------------------------------------------
    def create_schedule(
        self, url: str, cron: str, body: bytes, *, schedule_id: str | None = None,
        options: PublishOptions | None = None,
    ) -> dict:  # fmt: skip
        headers = {"Content-Type": "application/json", "Upstash-Cron": cron}
        headers.update((options or PublishOptions()).headers())
        if schedule_id:
            headers["Upstash-Schedule-Id"] = schedule_id
        return self._request("POST", f"/v2/schedules/{url}", headers=headers, content=body)

    def list_schedules(self) -> list:
        return self._request("GET", "/v2/schedules")

    def delete_schedule(self, schedule_id: str) -> None:
        self._request("DELETE", f"/v2/schedules/{quote(schedule_id, safe='')}")

    # --- dead-letter queue ----------------------------------------------------------------
    def list_dlq(self, cursor: str | None = None, count: int | None = None) -> dict:
        params = {k: str(v) for k, v in (("cursor", cursor), ("count", count)) if v is not None}
        return self._request("GET", "/v2/dlq", params=params)

    def retry_dlq(self, dlq_id: str) -> dict:
        return self._request("POST", f"/v2/dlq/retry/{quote(dlq_id, safe='')}")

    def delete_dlq(self, dlq_id: str) -> None:
        self._request("DELETE", f"/v2/dlq/{quote(dlq_id, safe='')}")


def _rate_limit_wait(resp: httpx.Response, default: float) -> float:
    for name in ("retry-after", "burst-ratelimit-reset", "ratelimit-reset"):
        raw = resp.headers.get(name, "")
        try:
            value = float(raw)
        except ValueError:
            continue
        if value > 1e9:  # a unix timestamp (seconds or ms), not a delay
            value = (value / 1000 if value > 1e11 else value) - time.time()
        return min(max(value, 0.0), 60.0)
    return default


def _result(resp: httpx.Response) -> Any:
    if resp.is_success:
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text
    raise QStashError(f"QStash answered {resp.status_code}: {resp.text[:300]}")
