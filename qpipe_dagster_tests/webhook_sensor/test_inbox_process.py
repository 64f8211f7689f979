"""`ProcessCommitWriter`, the receiver's inbox writer: commits in a child process.

What a child process adds to the writer contract (run for both writers in test_inbox_contract):
it dies with its pipe, a dead child fails only what it held and is replaced, and the target (a
PostgreSQL URL may carry a password) never appears on a command line.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from qpipe_dagster_tests.webhook_sensor.conftest import free_port
from qpipe_dagster_tests.webhook_sensor.test_durability import _spawn
from qpipe_dagster_tests.webhook_sensor.test_inbox_contract import rec
from webhook_sensor.inbox import InboxUnavailable, open_inbox
from webhook_sensor.inbox.process import ProcessCommitWriter


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # exited, or a zombie another test's child left to its parent
        return ""


def _writer_children(pid: int) -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process(pid).children(recursive=True)
        if "webhook_sensor.inbox.process" in _cmdline(p)
    ]


def _gone(proc: psutil.Process, timeout: float) -> bool:
    try:
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        return False
    return True


def test_a_killed_child_fails_its_batch_and_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "inbox.sqlite"
    writer = ProcessCommitWriter(target)

    async def go() -> None:
        assert await writer.submit(rec("before")) is True
        (child,) = _writer_children(os.getpid())
        blocker = open_inbox(target)  # hold the write lock: the next commit waits in the child
        import sqlite3

        db = sqlite3.connect(target, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        try:
            pending = asyncio.ensure_future(writer.submit(rec("lost")))
            await asyncio.sleep(0.3)
            assert not pending.done()
            child.kill()  # the OOM killer, an operator's kill -9
            with pytest.raises(InboxUnavailable, match="inbox writer process stopped"):
                await asyncio.wait_for(pending, 10)
        finally:
            db.execute("ROLLBACK")
            db.close()
        # the next delivery starts a new child and is stored; the lost one was never committed
        assert await asyncio.wait_for(writer.submit(rec("after")), 15) is True
        assert [c.pid for c in _writer_children(os.getpid())] != [child.pid]
        assert blocker.get("lost") is None and blocker.get("after") is not None

    try:
        asyncio.run(go())
    finally:
        writer.close()
    assert _writer_children(os.getpid()) == []  # close() waits for the child to exit


def test_the_target_is_not_on_the_child_command_line(tmp_path: Path) -> None:
    """A PostgreSQL URL carries its password: `ps` must not show it. Here a path stands in."""
    target = tmp_path / "secret-looking-name.sqlite"
    writer = ProcessCommitWriter(target)
    try:
        assert asyncio.run(writer.submit(rec("m"))) is True
        (child,) = _writer_children(os.getpid())
        assert "secret-looking-name" not in " ".join(child.cmdline())
        assert child.environ().get("QPIPE_INBOX_URL") in (None, os.environ.get("QPIPE_INBOX_URL"))
    finally:
        writer.close()


def test_child_exits_when_the_receiver_is_sigkilled(tmp_path: Path) -> None:
    """The child reads until its pipe closes, so a SIGKILLed receiver leaves no writer behind
    (and nothing holding the inbox file's lock)."""
    import httpx

    from qpipe_dagster_tests.webhook_sensor.conftest import CURRENT, make_token

    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/qstash"
    body = b'{"concept": "Crash Safe"}'
    proc = _spawn(home, port)
    try:
        resp = httpx.post(url, content=body, headers={
            "Upstash-Signature": make_token(CURRENT, url, body), "Upstash-Message-Id": "msg_1",
        })  # fmt: skip
        assert resp.status_code == 200, resp.text
        (child,) = _writer_children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert _gone(child, 15), "the inbox writer outlived the receiver"
    finally:
        proc.kill()
        proc.wait()
    assert open_inbox(home / "qpipe" / "inbox.sqlite").get("msg_1") is not None


def test_close_from_the_loop_lets_the_child_commit_what_it_was_given(tmp_path: Path) -> None:
    """The receiver's lifespan closes the writer on its own loop (`aclose`): submissions already
    handed over are committed and answered, the child exits, and the loop is never blocked."""
    target = tmp_path / "inbox.sqlite"
    writer = ProcessCommitWriter(target)

    async def go() -> list:
        first = await writer.submit(rec("warm"))
        batch = [asyncio.ensure_future(writer.submit(rec(f"m{i}"))) for i in range(50)]
        await asyncio.sleep(0)  # handed over in this iteration
        await asyncio.sleep(0)
        started = time.monotonic()
        await writer.aclose()
        assert time.monotonic() - started < 5
        with pytest.raises(InboxUnavailable, match="inbox closed"):
            await writer.submit(rec("late"))
        return [first, *await asyncio.gather(*batch, return_exceptions=True)]

    outcomes = asyncio.run(go())
    stored = open_inbox(target)
    # every submission either committed (True) or was refused before reaching the child
    for i, outcome in enumerate(outcomes[1:]):
        assert outcome is True or isinstance(outcome, InboxUnavailable), outcome
        assert (stored.get(f"m{i}") is not None) == (outcome is True)
    assert outcomes[0] is True and _writer_children(os.getpid()) == []
