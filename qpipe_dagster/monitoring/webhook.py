"""Post an alert to a chat webhook with a Slack-compatible body (QPIPE_ALERT_WEBHOOK_URL).

Used by the run-failure sensor, so a failed run reaches someone even where no Prometheus and
Alertmanager run (a laptop, a small single-host deployment). The body is Slack's incoming-webhook
JSON (`text` plus one `attachments` entry), which Mattermost, Rocket.Chat and Discord's `/slack`
endpoints take as well. Transient answers (a refused connection, 429, 5xx) are retried with
exponential backoff and jitter; a 4xx is a wrong URL and is reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from qpipe_dagster.resilience.transient import is_transient
from qpipe_dagster.settings import SettingError, env_value

WEBHOOK_ENV = "QPIPE_ALERT_WEBHOOK_URL"


class WebhookError(RuntimeError):
    """The webhook refused the alert or could not be reached; the message says which."""


def alert_webhook_url(env: Mapping[str, str] | None = None) -> str | None:
    """QPIPE_ALERT_WEBHOOK_URL, None when unset or blank; anything but an http(s) URL with a
    host is refused naming the variable."""
    value = env_value(WEBHOOK_ENV, env)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingError(
            f"{WEBHOOK_ENV}={value!r} is invalid: must be an http:// or https:// URL with a host"
            " (e.g. a Slack incoming-webhook URL)"
        )
    return value


@dataclass(frozen=True)
class RunFailure:
    job: str
    run_id: str
    partition: str | None
    message_id: str | None
    reason: str
    ui_url: str | None = None


def run_failure_body(failure: RunFailure) -> dict:
    """Slack incoming-webhook JSON for one failed run."""
    where = f" for concept `{failure.partition}`" if failure.partition else ""
    link = f"{failure.ui_url.rstrip('/')}/runs/{failure.run_id}" if failure.ui_url else None
    fields = [
        {"title": "job", "value": failure.job, "short": True},
        {"title": "run", "value": failure.run_id, "short": True},
    ]
    if failure.partition:
        fields.append({"title": "concept", "value": failure.partition, "short": True})
    if failure.message_id:
        fields.append({"title": "QStash message", "value": failure.message_id, "short": True})
    reason = failure.reason.strip() or "(no reason recorded)"
    return {
        "text": f":red_circle: qpipe run failed: {failure.job}{where}",
        "attachments": [
            {
                "color": "danger",
                "title": f"{failure.job} run {failure.run_id[:8]} failed",
                **({"title_link": link} if link else {}),
                "text": reason[:2000],
                "fields": fields,
                "footer": "qpipe run_failure_webhook · runbook: docs/runbook.md#qpiperunfailed",
            }
        ],
    }


def _retryable(exc: BaseException) -> bool:
    return is_transient(exc)


@retry(
    retry=retry_if_exception(_retryable),
    wait=wait_exponential_jitter(initial=0.5, max=8.0),
    stop=stop_after_attempt(4),
    reraise=True,
)
def _post_once(client: httpx.Client, url: str, body: dict) -> None:
    resp = client.post(url, json=body)
    resp.raise_for_status()


def post_alert(url: str, body: dict, *, timeout_s: float = 10.0) -> None:
    """POST the body; WebhookError naming the URL's host and the answer when it will not go."""
    host = urlsplit(url).hostname
    try:
        with httpx.Client(timeout=timeout_s) as client:
            _post_once(client, url, body)
    except httpx.HTTPStatusError as exc:
        raise WebhookError(
            f"{WEBHOOK_ENV} at {host} answered {exc.response.status_code}"
            f" {exc.response.text[:200]!r}: check the URL"
        ) from None
    except httpx.HTTPError as exc:
        raise WebhookError(
            f"{WEBHOOK_ENV} at {host} cannot be reached ({type(exc).__name__}: {exc})"
        ) from None
