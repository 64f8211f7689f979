"""Structured JSON log lines; the QStash message id is the correlation id of every event.

A direct JSON-lines writer rather than the `logging` module: at thousands of deliveries a second
the stdlib's record machinery (caller lookup, locks) costs more than the delivery's own checks.
Inside an event loop, lines are gathered and written once per loop iteration: stderr is
line-buffered, so one write(2) per line would otherwise cost more than formatting it. Lines stay
whole and in order, and reach the stream before the loop does anything else.
Level from QPIPE_RECEIVER_LOG_LEVEL (debug, info, warning, error; default info).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import sys
import time
from json.encoder import encode_basestring_ascii as _quote  # json.dumps' own C string encoder
from typing import TextIO

from qpipe_dagster.settings import env_value

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
                logging.ERROR: "error", logging.CRITICAL: "critical"}  # fmt: skip
LOGGER_NAME = "qpipe.receiver"
# Rejection lines may carry the id of a request refused for it (a header of up to ~64 KiB).
MAX_ID_CHARS = 256


class JsonLogger:
    def __init__(self, stream: TextIO | None = None, level: int | None = None) -> None:
        self.stream = stream
        if level is None:
            name = (env_value("QPIPE_RECEIVER_LOG_LEVEL") or "info").lower()
            if name not in LEVELS:
                raise ValueError(f"QPIPE_RECEIVER_LOG_LEVEL={name!r}: use one of {sorted(LEVELS)}")
            level = LEVELS[name]
        self.level = level
        self._pending: list[str] = []
        atexit.register(self.flush)

    def isEnabledFor(self, level: int) -> bool:  # mirrors logging.Logger
        return level >= self.level

    def event(self, level: int, event: str, **fields: object) -> None:
        """Any event with any JSON-able fields (rare paths: start-up, rejections, errors)."""
        if level < self.level:
            return
        record = {
            "ts": round(time.time(), 3),
            "level": _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower(),
            "logger": LOGGER_NAME,
            "event": event,
            **fields,
        }
        if "message_id" in fields:
            mid = fields["message_id"]
            if isinstance(mid, str) and len(mid) > MAX_ID_CHARS:  # unchecked before the 489
                mid = record["message_id"] = f"{mid[:MAX_ID_CHARS]}…(+{len(mid) - MAX_ID_CHARS})"
            record["correlation_id"] = mid
        try:
            line = json.dumps(record, separators=(",", ":"), default=str)
        except ValueError:  # e.g. a circular structure: still log the event, never fail
            line = json.dumps({k: str(v) for k, v in record.items()}, separators=(",", ":"))
        self._emit(line + "\n")

    def delivery(self, event: str, message_id: str, concept: str) -> None:
        """The hot path's INFO line, byte-for-byte what `event` writes for the same fields."""
        if self.level > logging.INFO:
            return
        mid = _quote(message_id)
        self._emit(
            f'{{"ts":{round(time.time(), 3)!r},"level":"info","logger":"{LOGGER_NAME}",'
            f'"event":{_quote(event)},"message_id":{mid},"concept":{_quote(concept)},'
            f'"correlation_id":{mid}}}\n'
        )

    def _emit(self, line: str) -> None:
        self._pending.append(line)
        if len(self._pending) > 1:
            return  # a flush is already scheduled for this loop iteration
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:  # no event loop in this thread: write now
            self.flush()

    def flush(self) -> None:
        """Write every gathered line in one call; logging must never fail a delivery."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        text = "".join(pending)
        stream = self.stream or sys.stderr
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.write(text)
            stream.flush()


def get_logger() -> JsonLogger:
    return JsonLogger()


def log_event(logger: JsonLogger, level: int, event: str, **fields: object) -> None:
    logger.event(level, event, **fields)
