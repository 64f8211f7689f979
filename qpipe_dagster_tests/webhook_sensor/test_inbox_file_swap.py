"""The inbox file deleted or replaced under a running receiver (an operator's `rm`, a restore).

Old code: the writer's open connection kept committing to the old, unlinked file, so deliveries
were answered `200 stored` and lost: the sensor reads the path, which no longer held them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qpipe_dagster_tests.webhook_sensor.conftest import start_receiver
from webhook_sensor.inbox import open_inbox


def _remove_inbox(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _replace_inbox(path: Path) -> None:
    fresh = path.with_name("restored.sqlite")
    open_inbox(fresh)  # an empty inbox, as a restore would write it
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(fresh, path)


@pytest.mark.parametrize("swap", [_remove_inbox, _replace_inbox], ids=["deleted", "replaced"])
def test_delivery_after_the_file_changed_is_never_acknowledged_into_the_old_file(
    tmp_path: Path, swap
) -> None:
    server, rcv = start_receiver(tmp_path, rate_limit_per_s=10_000)
    inbox_path = rcv.settings.inbox_path
    body = b'{"concept": "Swap Safe", "urls": ["https://example.com/"]}'
    with server:
        assert rcv.signed(body, message_id="before").status_code == 200
        swap(inbox_path)
        first = rcv.signed(body, message_id="after")
        # the batch that reached the old file is refused, so QStash redelivers it...
        assert first.status_code == 503 and first.json() == {"error": "inbox_unavailable"}
        # ...and the redelivery lands in the file at the path, where the sensor reads
        again = rcv.signed(body, message_id="after")
        assert again.status_code == 200 and again.json()["status"] == "stored"
        assert rcv.signed(body, message_id="later").status_code == 200
    rcv.client.close()
    inbox = open_inbox(inbox_path)
    assert inbox.get("after") is not None and inbox.get("later") is not None
    assert inbox.get("before") is None  # it went with the old file: the operator's doing
