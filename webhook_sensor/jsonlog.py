"""Structured JSON log lines; the QStash message id is the correlation id of every event.

A direct JSON-lines writer rather than the `logging` module: at thousands of deliveries a second
the stdlib's record machinery (caller lookup, locks) costs more than the delivery's own checks.
Level from QPIPE_RECEIVER_LOG_LEVEL (debug, info, warning, error; default info).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from typing import TextIO

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip


class JsonLogger:
    def __init__(self, stream: TextIO | None = None, level: int | None = None) -> None:
        self.stream = stream
        if level is None:
            name = os.environ.get("QPIPE_RECEIVER_LOG_LEVEL", "info").strip().lower()
            if name not in LEVELS:
                raise ValueError(f"QPIPE_RECEIVER_LOG_LEVEL={name!r}: use one of {sorted(LEVELS)}")
            level = LEVELS[name]
        self.level = level

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - mirrors logging.Logger
        return level >= self.level

    def event(self, level: int, event: str, **fields: object) -> None:
        if level < self.level:
            return
        record = {
            "ts": round(time.time(), 3),
            "level": logging.getLevelName(level).lower(),
            "logger": "qpipe.receiver",
            "event": event,
            **fields,
        }
        if "message_id" in fields:
            record["correlation_id"] = fields["message_id"]
        stream = self.stream or sys.stderr
        with contextlib.suppress(OSError, ValueError):  # logging must never fail a delivery
            stream.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")


def get_logger() -> JsonLogger:
    return JsonLogger()


def log_event(logger: JsonLogger, level: int, event: str, **fields: object) -> None:
    logger.event(level, event, **fields)
