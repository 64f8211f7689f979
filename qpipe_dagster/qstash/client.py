"""A small QStash REST client (httpx): publish, batch, schedules and the dead-letter queue.

Pure of Dagster so the CLI can use it; `QStashResource` wraps it for assets. 429 answers are
retried with backoff (honouring Retry-After / Burst-RateLimit-Reset), as are 5xx answers and
network errors. Options, cron expressions and ids are checked before anything is sent
(QStashInputError names the field), and an answer that is not the JSON QStash documents is a
QStashError, never a string handed on to callers.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from qpipe_dagster.qstash.checks import (
    MAX_UNIX_S,
    QStashInputError,
    check_cron,
    delay_header,
    destination,
    header_name,
    header_value,
    http_url,
    retry_after_s,
    whole_number,
)

__all__ = ["DEFAULT_BASE_URL", "PublishOptions", "QStashClient", "QStashError", "QStashInputError"]

DEFAULT_BASE_URL = "https://qstash.upstash.io"
MAX_WAIT_S = 60.0  # one backoff or Retry-After wait, at most


class QStashError(RuntimeError):
    """QStash refused a request, could not be reached, or answered something unreadable; the
    message carries its status and answer."""

    status_code: int | None = None  # QStash's HTTP status, when it answered


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

    def __post_init__(self) -> None:
        """Refuse at construction what QStash would refuse (or httpx could not send): a negative
        or unit-less delay used to go out as '-5s' / 'soon', a newline in an id was retried as a
        network error, a rate without a flow-control key was dropped without a word."""
        if self.delay is not None:
            delay_header(self.delay)
        if self.not_before is not None:
            whole_number("not_before (unix seconds)", self.not_before, 0, MAX_UNIX_S)
        if self.retries is not None:
            whole_number("retries", self.retries, 0)
        for name in ("deduplication_id", "flow_control_key", "label"):
            if getattr(self, name):
                header_value(name, getattr(self, name))
        for name in ("callback", "failure_callback"):
            if getattr(self, name):
                http_url(name, getattr(self, name))
        for name in ("flow_control_parallelism", "flow_control_rate"):
            if getattr(self, name) is not None:
                whole_number(name, getattr(self, name), 1)
                if not self.flow_control_key:
                    raise QStashInputError(f"{name} needs flow_control_key")
        if self.content_based_deduplication is not None and not isinstance(
            self.content_based_deduplication, bool
        ):
            raise QStashInputError("content_based_deduplication must be True or False")
        for k, v in self.forward_headers.items():
            header_name("forward_headers", k)
            header_value(f"forward_headers[{k!r}]", str(v))

    def headers(self) -> dict[str, str]:
        h: dict[str, str] = {}
        if self.delay is not None:
            h["Upstash-Delay"] = delay_header(self.delay)
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


def _once(headers: dict[str, str]) -> dict[str, str]:
    """`headers` with a fresh Upstash-Deduplication-Id when the caller set no deduplication."""
    if "Upstash-Deduplication-Id" not in headers and (
        headers.get("Upstash-Content-Based-Deduplication") != "true"
    ):
        headers["Upstash-Deduplication-Id"] = "qpipe-" + uuid.uuid4().hex
    return headers


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
        """Blank or padded tokens and a base URL httpx cannot use fail here, naming the setting:
        they used to surface as 'cannot reach QStash' after every retry (or a traceback)."""
        token = token.strip() if isinstance(token, str) else ""
        if not token:
            raise QStashInputError("QSTASH_TOKEN is empty; set it to publish through QStash")
        if not re.fullmatch(r"[\x21-\x7e]+", token):
            raise QStashInputError(
                "QSTASH_TOKEN contains spaces or characters that are not printable ASCII;"
                " copy it again from the Upstash console"
            )
        self.base_url = http_url("QStash URL (QSTASH_URL)", base_url).rstrip("/")
        self.max_retries = whole_number("max_retries", max_retries, 0)
        for name, value in (("backoff_s", backoff_s), ("timeout_s", timeout_s)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and value >= 0)
            ):
                raise QStashInputError(f"{name} must be a number of seconds >= 0, got {value!r}")
        self.backoff_s = float(backoff_s)
        self.timeout_s = float(timeout_s)
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
        """One call through this QStash URL's circuit breaker (the retries are our own, below):
        once 5 calls in a row failed for transient reasons, calls fail at once for a while
        instead of each waiting out its retries. Refusals (4xx) are not counted."""
        from urllib.parse import urlsplit

        from qpipe_dagster.resilience.guard import CircuitOpenError, breaker_call

        try:
            return breaker_call(
                f"qstash@{urlsplit(self.base_url).netloc}",
                self._request_retrying,
                method,
                path,
                headers=headers,
                content=content,
                params=params,
            )
        except CircuitOpenError as exc:
            raise QStashError(f"QStash at {self.base_url}: {exc}") from None

    def _request_retrying(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
        content: bytes | None = None, params: Mapping[str, str] | None = None,
    ) -> Any:  # fmt: skip
        url = self.base_url + path
        tries = self.max_retries + 1
        for attempt in range(tries):
            wait = min(self.backoff_s * (2 ** min(attempt, 32)), MAX_WAIT_S)
            try:
                resp = self._http.request(
                    method, url, headers=dict(headers or {}), content=content, params=params
                )
            except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
                # our request is malformed: sending it again cannot help
                raise QStashError(f"request to QStash at {self.base_url} not sent: {exc}") from exc
            except httpx.TimeoutException as exc:
                if attempt == self.max_retries:
                    raise QStashError(
                        f"QStash at {self.base_url} did not answer within {self.timeout_s:g}s"
                        f" ({tries} attempt(s); {type(exc).__name__})"
                    ) from exc
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise QStashError(
                        f"cannot reach QStash at {self.base_url} ({tries} attempt(s)): {exc}"
                    ) from exc
            else:
                if resp.status_code != 429 and resp.status_code < 500:
                    return _result(resp)
                if attempt == self.max_retries:
                    _result(resp, attempts=tries)
                if resp.status_code == 429:
                    wait = _rate_limit_wait(resp, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")

    # --- messages -------------------------------------------------------------------------
    # A publish whose answer was lost (timeout, 5xx after QStash stored it) is retried, so each
    # message carries a deduplication id unless the caller chose one or content-based
    # deduplication: QStash then keeps one copy, and the receiver never runs the concept twice.
    def publish(
        self, url: str, body: bytes, *, content_type: str = "application/json",
        options: PublishOptions | None = None,
    ) -> dict | list[dict]:  # fmt: skip
        """Publish one message to `url`; returns QStash's answer ({"messageId": ...}; a list
        of those for a URL group)."""
        destination("destination", url)
        headers = _once({
            "Content-Type": header_value("content_type", content_type),
            **(options or PublishOptions()).headers(),
        })  # fmt: skip
        answer = self._request("POST", f"/v2/publish/{url}", headers=headers, content=body)
        if isinstance(answer, list) and not url.startswith(("http://", "https://")):
            for item in answer:  # a URL group: one result per endpoint
                _expect_message(item, "publish to a URL group")
            return answer
        return _expect_message(answer, "publish")

    def publish_json(
        self, url: str, payload: Any, options: PublishOptions | None = None
    ) -> dict | list[dict]:
        return self.publish(url, json.dumps(payload).encode(), options=options)

    def batch(self, messages: Sequence[tuple[str, bytes, PublishOptions | None]]) -> list:
        """Publish several (url, body, options) messages in one request.

        All or nothing on our side: every item is checked before the request, and a bad one
        (named by its index) means nothing is sent. QStash answers one result per item; if it
        reports an error for some, QStashError lists those and the message ids of the rest.
        """
        if not messages:
            raise QStashInputError("batch is empty: nothing to publish")
        items = []
        for i, (url, body, opts) in enumerate(messages):
            try:
                destination("destination", url)
                text = body.decode("utf-8")
            except QStashInputError as exc:
                raise QStashInputError(f"batch item {i}: {exc}; nothing was sent") from None
            except UnicodeDecodeError as exc:
                raise QStashInputError(
                    f"batch item {i} ({url}): body is not UTF-8 (bad byte at offset {exc.start})"
                    "; QStash batches carry text bodies. Nothing was sent"
                ) from None
            headers = _once(
                {"Content-Type": "application/json", **(opts or PublishOptions()).headers()}
            )
            items.append({"destination": url, "headers": headers, "body": text})
        answer = self._request(
            "POST", "/v2/batch", headers={"Content-Type": "application/json"},
            content=json.dumps(items).encode(),
        )  # fmt: skip
        return _batch_results(answer, [url for url, _, _ in messages])

    # --- schedules ------------------------------------------------------------------------
    def create_schedule(
        self, url: str, cron: str, body: bytes, *, schedule_id: str | None = None,
        options: PublishOptions | None = None,
    ) -> dict:  # fmt: skip
        """Create (or, with `schedule_id`, replace) a schedule; the cron is checked first."""
        destination("destination", url)
        headers = {"Content-Type": "application/json", "Upstash-Cron": check_cron(cron)}
        headers.update((options or PublishOptions()).headers())
        if schedule_id is not None:
            headers["Upstash-Schedule-Id"] = _id("schedule id", schedule_id)
        answer = self._request("POST", f"/v2/schedules/{url}", headers=headers, content=body)
        if not isinstance(answer, dict) or not isinstance(answer.get("scheduleId"), str):
            raise _shape_error("create schedule", answer, '{"scheduleId": "..."}')
        return answer

    def list_schedules(self) -> list[dict]:
        answer = self._request("GET", "/v2/schedules")
        if answer is None:
            return []
        if not isinstance(answer, list) or not all(isinstance(s, dict) for s in answer):
            raise _shape_error("list schedules", answer, "a JSON array of schedule objects")
        return answer

    def delete_schedule(self, schedule_id: str) -> None:
        self._request("DELETE", f"/v2/schedules/{quote(_id('schedule id', schedule_id), safe='')}")

    # --- dead-letter queue ----------------------------------------------------------------
    def list_dlq(self, cursor: str | None = None, count: int | None = None) -> dict:
        """One page: {"messages": [...], "cursor": next page or absent}."""
        params = {k: str(v) for k, v in (("cursor", cursor), ("count", count)) if v is not None}
        page = self._request("GET", "/v2/dlq", params=params)
        if page is None:
            return {"messages": []}
        if (
            not isinstance(page, dict)
            or not isinstance(page.get("messages", []), list)
            or not all(isinstance(m, dict) for m in page.get("messages", []))
            or not isinstance(page.get("cursor") or "", str | int)
        ):
            raise _shape_error("list DLQ", page, '{"messages": [{...}], "cursor": "..."}')
        return page

    def iter_dlq(self) -> Iterator[dict]:
        """Every dead-lettered message, following cursors; a cursor QStash repeats is an error
        (following it again would loop for ever, printing the same pages)."""
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            page = self.list_dlq(cursor=cursor)
            yield from page.get("messages", [])
            nxt = page.get("cursor")
            if nxt is None or nxt == "":
                return
            cursor = str(nxt)
            if cursor in seen:
                raise QStashError(
                    f"QStash returned DLQ cursor {cursor!r} twice; stopped listing to avoid a loop"
                )
            seen.add(cursor)

    def retry_dlq(self, dlq_id: str) -> dict:
        answer = self._request("POST", f"/v2/dlq/retry/{quote(_id('DLQ id', dlq_id), safe='')}")
        if answer is None:
            return {}
        if not isinstance(answer, dict):
            raise _shape_error("retry DLQ message", answer, '{"messageId": "..."}')
        return answer

    def delete_dlq(self, dlq_id: str) -> None:
        self._request("DELETE", f"/v2/dlq/{quote(_id('DLQ id', dlq_id), safe='')}")


def _id(field: str, value: object) -> str:
    """A schedule or DLQ id: an empty one used to hit the collection URL (/v2/schedules/)."""
    return header_value(field, value, max_len=512)


def _rate_limit_wait(resp: httpx.Response, default: float) -> float:
    """Wait the server asked for (Retry-After in seconds or as an HTTP-date, or Upstash's
    reset timestamps), capped at MAX_WAIT_S; `default` when none is usable (e.g. 'nan')."""
    for name in ("retry-after", "burst-ratelimit-reset", "ratelimit-reset"):
        value = retry_after_s(resp.headers.get(name))
        if value is not None:
            return min(value, MAX_WAIT_S)
    return default


def _shape_error(call: str, answer: object, expected: str) -> QStashError:
    shown = answer if isinstance(answer, str) else json.dumps(answer)
    return QStashError(
        f"QStash's answer to {call} is not what its API returns (expected {expected}):"
        f" {_snippet(shown)}"
    )


def _expect_message(answer: object, call: str) -> dict:
    if not isinstance(answer, dict) or not isinstance(answer.get("messageId"), str):
        raise _shape_error(call, answer, '{"messageId": "..."}')
    return answer


def _batch_results(answer: object, urls: list[str]) -> list:
    """One result per item, in order; items QStash reports as failed are named, with the ids of
    those it accepted, so a partial batch is never mistaken for a complete one."""
    if not isinstance(answer, list) or len(answer) != len(urls):
        raise _shape_error("batch", answer, f"a JSON array of {len(urls)} results")
    failed = [
        f"item {i} ({urls[i]}): {r['error'] if isinstance(r, dict) else repr(r)}"
        for i, r in enumerate(answer)
        if not isinstance(r, dict | list) or (isinstance(r, dict) and "error" in r)
    ]
    if failed:
        accepted = [
            f"item {i}: {r.get('messageId')}"
            for i, r in enumerate(answer)
            if isinstance(r, dict) and "error" not in r
        ]
        raise QStashError(
            f"QStash refused {len(failed)} of {len(urls)} batch items: {'; '.join(failed)}."
            f" Published: {', '.join(accepted) or 'none'}"
        )
    return answer


def _snippet(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _error_detail(resp: httpx.Response) -> str:
    """What QStash said, readably: its JSON {"error": ...}, or what kind of page came back."""
    ctype = resp.headers.get("content-type", "")
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    if "html" in ctype or resp.text.lstrip()[:15].lower().startswith(("<!doctype", "<html")):
        title = re.search(r"<title[^>]*>(.*?)</title>", resp.text, re.I | re.S)
        shown = f" ({_snippet(title.group(1), 120)})" if title else ""
        return (
            f"an HTML page{shown}, not QStash's JSON API; check QSTASH_URL (now"
            f" {resp.request.url.scheme}://{resp.request.url.netloc.decode()})"
        )
    return _snippet(resp.text) if resp.text.strip() else "(empty body)"


def _result(resp: httpx.Response, attempts: int = 1) -> Any:
    if resp.is_success:
        if not resp.content.strip():
            return None
        try:
            return resp.json()
        except ValueError:
            raise QStashError(
                f"QStash answered {resp.status_code} with a body that is not JSON:"
                f" {_error_detail(resp)}"
            ) from None
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    error = QStashError(f"QStash answered {resp.status_code}{tried}: {_error_detail(resp)}")
    error.status_code = resp.status_code  # 429/5xx count against the breaker, 4xx do not
    raise error
