"""QSTASH_DAILY_LIMIT where messages are published: the CLI publisher against the QStash
emulator and the real receiver, and the shared per-day count across processes."""

from __future__ import annotations

import json
import multiprocessing
import re
import time
from pathlib import Path

import pytest

from qpipe_dagster.cli import main
from qpipe_dagster.qstash.ledger import DailyLimitReached, PublishLedger, ledger_path
from qpipe_dagster_tests.qstash.conftest import TOKEN
from webhook_sensor.inbox import Inbox


@pytest.fixture
def capped(dagster_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QSTASH_DAILY_LIMIT", "2")
    return dagster_home


def test_publishes_over_the_limit_are_refused_with_the_count_and_nothing_is_lost(
    capped: Path,
    live_receiver,
    qstash_emulator,
    monkeypatch,
    capsys,
) -> None:
    monkeypatch.setenv("QSTASH_TOKEN", TOKEN)
    monkeypatch.setenv("QSTASH_URL", qstash_emulator.base)
    monkeypatch.setenv("QPIPE_RECEIVER_URL", live_receiver.url)
    ids = []
    for name in ("first", "second"):
        assert main(["submit", name, "--url", "https://example.com/a"]) == 0
        ids.append(json.loads(capsys.readouterr().out)["messageId"])
    assert main(["submit", "third", "--url", "https://example.com/a"]) == 2
    err = capsys.readouterr().err
    assert re.search(
        r"QSTASH_DAILY_LIMIT=2 reached: 2 message\(s\) already published on \d{4}-\d\d-\d\d"
        r" \(UTC\), 1 more refused; nothing was published",
        err,
    ), err
    assert len(qstash_emulator.published) == 2  # the third never left
    inbox = Inbox(live_receiver.settings.inbox_path)
    deadline = time.time() + 10
    while any(inbox.get(i) is None for i in ids) and time.time() < deadline:
        time.sleep(0.05)
    assert all(inbox.get(i) is not None for i in ids)  # what QStash accepted is stored


def test_a_publish_that_fails_gives_its_place_back(
    capped: Path,
    qstash_emulator,
    monkeypatch,
    capsys,
) -> None:
    monkeypatch.setenv("QSTASH_TOKEN", "wrong-token")  # the emulator answers 401
    monkeypatch.setenv("QSTASH_URL", qstash_emulator.base)
    assert main(["submit", "x", "--url", "https://example.com/a",
                 "--receiver-url", "https://qpipe.example.com/api/qstash"]) == 2  # fmt: skip
    assert "401" in capsys.readouterr().err
    assert PublishLedger(ledger_path()).used(time.time()) == 0


def _reserve_many(path: str, n: int, limit: int, out) -> None:
    ledger, ok = PublishLedger(Path(path)), 0
    for _ in range(n):
        try:
            ledger.reserve(1, limit, 1_764_979_200.0)  # 2025-12-06, a pinned day
            ok += 1
        except DailyLimitReached:
            pass
    out.put(ok)


def test_the_count_is_shared_by_processes_and_never_passes_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "publishes.sqlite"
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_reserve_many, args=(str(path), 40, 50, out)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert sum(out.get(timeout=5) for _ in procs) == 50
    assert PublishLedger(path).used(1_764_979_200.0) == 50
    assert PublishLedger(path).used(1_764_979_200.0 + 86_400) == 0  # a new UTC day
