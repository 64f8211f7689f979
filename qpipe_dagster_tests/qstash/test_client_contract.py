"""One contract for the QStash client, run against every QStash available.

The loopback emulator always runs. Real QStash runs when `QSTASH_TOKEN` and
`QPIPE_QSTASH_CONTRACT_URL` (a public URL QStash may deliver to, e.g. your receiver) are set;
`QSTASH_URL` picks the region (default the cloud API). Each test cleans up what it creates.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from qpipe_dagster.qstash.client import DEFAULT_BASE_URL, PublishOptions, QStashClient, QStashError
from qpipe_dagster_tests.qstash.conftest import TOKEN, QStashEmulator


@dataclass
class Backend:
    client: QStashClient
    destination: str


@pytest.fixture(params=["emulator", "qstash"])
def qstash(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "emulator":
        emu: QStashEmulator = request.getfixturevalue("qstash_emulator")
        rcv = request.getfixturevalue("live_receiver")
        with QStashClient(TOKEN, emu.base, backoff_s=0.01) as client:
            yield Backend(client, rcv.url)
        return
    token = os.environ.get("QSTASH_TOKEN", "").strip()
    destination = os.environ.get("QPIPE_QSTASH_CONTRACT_URL", "").strip()
    if not token or not destination:
        pytest.skip(
            "no QStash credentials configured: set QSTASH_TOKEN and QPIPE_QSTASH_CONTRACT_URL "
            "to run the client contract against real QStash"
        )
    with QStashClient(token, os.environ.get("QSTASH_URL") or DEFAULT_BASE_URL) as client:
        yield Backend(client, destination)


def test_publish_returns_a_message_id(qstash: Backend) -> None:
    options = PublishOptions(deduplication_id=f"qpipe-contract-{uuid.uuid4().hex}")
    result = qstash.client.publish_json(qstash.destination, {"concept": "contract"}, options)
    assert isinstance(result.get("messageId"), str) and result["messageId"]


def test_schedule_round_trip(qstash: Backend) -> None:
    schedule_id = f"qpipe-contract-{uuid.uuid4().hex[:12]}"
    created = qstash.client.create_schedule(
        qstash.destination, "0 0 1 1 *", b'{"concept": "contract"}', schedule_id=schedule_id
    )
    try:
        assert created["scheduleId"] == schedule_id
        listed = {s["scheduleId"]: s for s in qstash.client.list_schedules()}
        assert listed[schedule_id]["cron"] == "0 0 1 1 *"
    finally:
        qstash.client.delete_schedule(schedule_id)
    assert schedule_id not in {s["scheduleId"] for s in qstash.client.list_schedules()}


def test_dlq_lists_and_refuses_unknown_ids(qstash: Backend) -> None:
    page = qstash.client.list_dlq()
    assert isinstance(page.get("messages"), list)
    with pytest.raises(QStashError):
        qstash.client.delete_dlq(f"dlq-does-not-exist-{uuid.uuid4().hex}")
