"""`qpipe submit`, `qpipe dlq` and `qpipe schedules`: drive the pipeline through QStash.

With QSTASH_TOKEN set, `submit` publishes through QStash (QSTASH_URL, default the cloud API) to
the receiver's public URL. Without it (the local default), `submit` signs the message exactly as
QStash would, with QSTASH_CURRENT_SIGNING_KEY or the QStash dev server's published dev key, and
delivers it to the local receiver itself, retrying like QStash.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable

from qpipe_dagster.cli import CliError
from qpipe_dagster.qstash.checks import (
    QStashInputError,
    check_cron,
    delay_header,
    header_value,
    http_url,
)
from qpipe_dagster.qstash.client import DEFAULT_BASE_URL, PublishOptions, QStashClient, QStashError
from qpipe_dagster.qstash.ledger import DailyLimitReached, counted_publish
from qpipe_dagster.qstash.local import (
    MAX_MESSAGE_ID_LEN,
    MAX_RETRIES,
    DeliveryError,
    deliver_locally,
)
from qpipe_dagster.settings import env_value, whole_number
from webhook_sensor.payload import PayloadError, parse_concept_message
from webhook_sensor.settings import DEFAULT_RECEIVER_URL, DEV_CURRENT_SIGNING_KEY


def _receiver_url(args: argparse.Namespace) -> str:
    """--receiver-url, else QPIPE_RECEIVER_URL (blank means unset), else the local default.
    A bad env value used to reach httpx: retried as "cannot reach", or a traceback."""
    if args.receiver_url:
        return args.receiver_url
    raw = env_value("QPIPE_RECEIVER_URL")
    if raw is None:
        return DEFAULT_RECEIVER_URL
    try:
        return http_url("QPIPE_RECEIVER_URL", raw)
    except QStashInputError as exc:
        raise CliError(str(exc)) from None


def _client() -> QStashClient:
    token = env_value("QSTASH_TOKEN")
    if token is None:
        raise CliError(
            "QSTASH_TOKEN is not set: the DLQ and schedules live in QStash (cloud, or the dev"
            " server `npx @upstash/qstash-cli dev` with QSTASH_URL=http://127.0.0.1:8080)"
        )
    return QStashClient(token, env_value("QSTASH_URL") or DEFAULT_BASE_URL)


def _message_body(args: argparse.Namespace) -> bytes:
    payload: dict = {"concept": args.concept, "urls": list(args.url or [])}
    if args.symbol:
        payload["symbol"] = args.symbol
    body = json.dumps(payload).encode()
    try:
        parse_concept_message(body)  # fail here, not in the receiver's DLQ
    except PayloadError as exc:
        raise CliError(str(exc)) from None
    return body


def _submit(args: argparse.Namespace) -> int:
    body = _message_body(args)
    url = _receiver_url(args)
    use_qstash = args.mode == "qstash" or (
        args.mode == "auto" and env_value("QSTASH_TOKEN") is not None
    )
    if use_qstash:
        options = PublishOptions(delay=args.delay, deduplication_id=args.dedup_id)
        try:
            with counted_publish(), _client() as client:  # QSTASH_DAILY_LIMIT, before sending
                result = client.publish(url, body, options=options)
        except (QStashError, DailyLimitReached) as exc:
            raise CliError(str(exc)) from None
        answer = result if isinstance(result, dict) else {"messages": result}  # a URL group
        print(json.dumps({"mode": "qstash", "destination": url, **answer}))
        return 0
    if args.delay is not None:
        raise CliError("--delay needs QStash (set QSTASH_TOKEN); local mode delivers at once")
    key = env_value("QSTASH_CURRENT_SIGNING_KEY") or DEV_CURRENT_SIGNING_KEY
    try:
        with counted_publish():  # the local stand-in for QStash counts against the same cap
            delivery = deliver_locally(
                url, body, signing_key=key, message_id=args.dedup_id, retries=args.retries,
                backoff_s=args.backoff,
            )  # fmt: skip
    except (DeliveryError, DailyLimitReached) as exc:
        raise CliError(str(exc)) from None
    print(json.dumps({"mode": "local", "destination": url, "attempts": delivery.attempts,
                      **delivery.response}))  # fmt: skip
    return 0


def _dlq(args: argparse.Namespace) -> int:
    try:
        with _client() as client:
            if args.dlq_command == "list":
                for m in client.iter_dlq():
                    print(json.dumps({k: m.get(k) for k in (
                        "dlqId", "messageId", "url", "responseStatus", "createdAt", "body")}))  # fmt: skip
            elif args.dlq_command == "retry":
                for dlq_id in args.dlq_ids:
                    with counted_publish():  # a retried message is published again
                        answer = client.retry_dlq(dlq_id) or {}
                    print(json.dumps({"dlqId": dlq_id, **answer}))
            else:
                for dlq_id in args.dlq_ids:
                    client.delete_dlq(dlq_id)
                    print(json.dumps({"dlqId": dlq_id, "deleted": True}))
    except (QStashError, DailyLimitReached) as exc:
        raise CliError(str(exc)) from None
    return 0


def _schedules(args: argparse.Namespace) -> int:
    try:
        with _client() as client:
            if args.schedules_command == "list":
                for s in client.list_schedules():
                    print(json.dumps({k: s.get(k) for k in (
                        "scheduleId", "cron", "destination", "body", "isPaused")}))  # fmt: skip
            elif args.schedules_command == "create":
                body = _message_body(args)
                result = client.create_schedule(
                    _receiver_url(args), args.cron, body, schedule_id=args.schedule_id
                )
                print(json.dumps(result))
            else:
                client.delete_schedule(args.schedule_id)
                print(json.dumps({"scheduleId": args.schedule_id, "deleted": True}))
    except QStashError as exc:
        raise CliError(str(exc)) from None
    return 0


def _add_message_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("concept", help="concept name, e.g. 'Bitcoin halving momentum'")
    p.add_argument("--url", action="append", metavar="URL", help="seed URL (repeatable)")
    p.add_argument("--symbol", help="market symbol, e.g. BTC-USD")
    p.add_argument("--receiver-url", type=_checked(http_url),
                   help=f"receiver URL (default $QPIPE_RECEIVER_URL or {DEFAULT_RECEIVER_URL})")  # fmt: skip


def _checked(check: Callable[..., object], **kw: object) -> Callable[[str], str]:
    """An argparse type from a qstash.checks function: refused values are usage errors (exit 2)
    naming the option, before any request is made."""

    def convert(text: str) -> str:
        try:
            check("value", text, **kw)
        except QStashInputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return convert


def _delay(text: str) -> str:
    try:
        return delay_header(text, field="value")
    except QStashInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cron(text: str) -> str:
    try:
        return check_cron(text, field="value")
    except QStashInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    """0..MAX_RETRIES: a huge count overflowed the exponential backoff (a traceback)."""
    try:
        return whole_number(text, 0, MAX_RETRIES)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number from 0 to {MAX_RETRIES}"
        ) from None


def _backoff_seconds(text: str) -> float:
    """Finite and >= 0: a negative or NaN backoff only failed later, inside time.sleep."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    submit = subparsers.add_parser(
        "submit", help="send a concept to the pipeline (via QStash or locally)"
    )
    _add_message_args(submit)
    submit.add_argument("--mode", choices=("auto", "qstash", "local"), default="auto",
                        help="auto: QStash when QSTASH_TOKEN is set, else local")  # fmt: skip
    submit.add_argument("--delay", type=_delay, help="QStash only: deliver later, e.g. 30s, 10m")
    submit.add_argument("--dedup-id", type=_checked(header_value, max_len=MAX_MESSAGE_ID_LEN),
                        help="deduplication / message id (printable ASCII)")  # fmt: skip
    submit.add_argument("--retries", type=_positive_int, default=3, help="local mode retries")
    submit.add_argument(
        "--backoff", type=_backoff_seconds, default=0.5, help="local mode first backoff (s)"
    )
    submit.set_defaults(handler=_submit)

    dlq = subparsers.add_parser("dlq", help="QStash dead-letter queue: list, retry, delete")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_sub.add_parser("list", help="list dead-lettered messages").set_defaults(handler=_dlq)
    for name in ("retry", "delete"):
        p = dlq_sub.add_parser(name, help=f"{name} DLQ messages by dlqId")
        p.add_argument("dlq_ids", nargs="+", metavar="DLQ_ID", type=_checked(header_value))
        p.set_defaults(handler=_dlq)

    sched = subparsers.add_parser("schedules", help="QStash schedules for recurring concepts")
    sched_sub = sched.add_subparsers(dest="schedules_command", required=True)
    sched_sub.add_parser("list", help="list schedules").set_defaults(handler=_schedules)
    create = sched_sub.add_parser("create", help="publish a concept on a cron schedule")
    _add_message_args(create)
    create.add_argument("--cron", required=True, type=_cron,
                        help="cron expression, e.g. '0 6 * * *' (CRON_TZ=Zone/Name first for a time zone)")  # fmt: skip
    create.add_argument("--schedule-id", type=_checked(header_value), help="id to create or update")
    create.set_defaults(handler=_schedules)
    delete = sched_sub.add_parser("delete", help="delete a schedule")
    delete.add_argument("schedule_id", type=_checked(header_value))
    delete.set_defaults(handler=_schedules)
