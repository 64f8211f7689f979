"""Progress for long commands: one helper for every `qpipe` command that counts work.

On a terminal it is a tqdm bar with counts, rate and time left. When the output is not a
terminal (cron, a log file, a pipe) or the command was given `--json`, it is one plain line per
step, `desc: [done/total] note (Ns elapsed, ~Ns left)`, so logs stay greppable and carry the
counts. Progress goes to stderr: stdout stays for the command's result (an id, a JSON object).

Stage code never imports this module: a command passes `meters(...)` (a `MeterFactory`) down,
and the stage opens one `Meter` per phase:

    with factory(total=len(items), desc="restoring", unit="component") as meter:
        for item in items:
            ...
            meter.advance(note=f"restored {item}")
        meter.write("a message that must not break the bar")
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self, TextIO


class Meter(Protocol):
    """Counts one phase of work; `advance` after each unit, `close` (or `with`) at the end."""

    def advance(self, n: int = 1, note: str = "") -> None: ...

    def write(self, msg: str) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Meter: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


# total, desc, unit -> a Meter; what commands pass to stage code
MeterFactory = Callable[..., Meter]


class _MeterBase:
    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class LineMeter(_MeterBase):
    """One line per advance with the count and a time estimate: for logs and pipes."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "item",
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0
        self._stream = stream
        self._clock = clock
        self._start = clock()

    def _print(self, msg: str) -> None:
        print(msg, file=self._stream or sys.stderr, flush=True)

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        elapsed = self._clock() - self._start
        left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        what = f" {note}" if note else f" {self.unit}"
        self._print(
            f"{self.desc}: [{self.done}/{self.total}]{what}"
            f" ({elapsed:.1f}s elapsed, ~{left:.0f}s left)"
        )

    def write(self, msg: str) -> None:
        self._print(msg)

    def close(self) -> None:
        pass


class BarMeter(_MeterBase):
    """A tqdm bar (counts, rate, time left); notes are shown after the bar, not printed."""

    def __init__(
        self, total: int, desc: str, unit: str = "item", *, stream: TextIO | None = None
    ) -> None:
        from tqdm import tqdm  # only a terminal needs it

        self._bar = tqdm(total=total, desc=desc, unit=unit, file=stream or sys.stderr)

    def advance(self, n: int = 1, note: str = "") -> None:
        if note:
            self._bar.set_postfix_str(note, refresh=False)
        self._bar.update(n)

    def write(self, msg: str) -> None:
        self._bar.write(msg, file=self._bar.fp)

    def close(self) -> None:
        self._bar.close()


def say(msg: str, *, stream: TextIO | None = None) -> None:
    """Print a message on stderr (or `stream`) without breaking a bar drawn there."""
    if wants_bar(stream):
        from tqdm import tqdm  # only a terminal needs it

        tqdm.write(msg, file=stream or sys.stderr)
    else:
        print(msg, file=stream or sys.stderr, flush=True)


def wants_bar(stream: TextIO | None = None, *, json_mode: bool = False) -> bool:
    """A bar only on a terminal and never with `--json` (a script reads that output)."""
    target = stream if stream is not None else sys.stderr
    return not json_mode and target is not None and target.isatty()


def meters(*, json_mode: bool = False, stream: TextIO | None = None) -> MeterFactory:
    """The factory a command hands to stage code: bars on a terminal, lines otherwise."""
    cls = BarMeter if wants_bar(stream, json_mode=json_mode) else LineMeter

    def factory(total: int, desc: str, unit: str = "item") -> Meter:
        return cls(total, desc, unit, stream=stream)

    return factory
