"""The shared progress helper: lines with counts off a terminal or with --json, a bar on one."""

from __future__ import annotations

import io
import os
import pty

from qpipe_dagster.cli.progress import BarMeter, LineMeter, meters, wants_bar


def test_lines_carry_counts_and_time_left_off_a_terminal() -> None:
    out = io.StringIO()
    ticks = iter([100.0, 102.0, 104.0])
    with LineMeter(2, "restoring", "component", stream=out, clock=lambda: next(ticks)) as m:
        m.advance(note="restored inbox")
        m.write("a side note")
        m.advance()
    assert out.getvalue().splitlines() == [
        "restoring: [1/2] restored inbox (2.0s elapsed, ~2s left)",
        "a side note",
        "restoring: [2/2] component (4.0s elapsed, ~0s left)",
    ]


def test_a_terminal_gets_a_bar_unless_json_was_asked() -> None:
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as tty:
            assert wants_bar(tty) and not wants_bar(tty, json_mode=True)
            assert isinstance(meters(stream=tty)(3, "x"), BarMeter)
            assert isinstance(meters(stream=tty, json_mode=True)(3, "x"), LineMeter)
        assert not wants_bar(io.StringIO())
        assert isinstance(meters(stream=io.StringIO())(3, "x"), LineMeter)
    finally:
        os.close(leader)
        os.close(follower)
