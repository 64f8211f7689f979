"""Durable inbox: accepted deliveries are committed to disk before the receiver answers 2xx.

Shaped like `qpipe_dagster.store`: the interface and `open_inbox` (`base`), what an inbox holds
(`records`), one module per backend (`sqlite`: a WAL file, the default, under DAGSTER_HOME;
`postgres`: when the target is a `postgresql://` URL), and the receiver's writer (`process`:
`ProcessCommitWriter`, whose child process commits all deliveries waiting at that moment in one
transaction, so throughput does not cost durability). The sensor reads and marks rows through
the store. De-duplication is the UNIQUE message_id column.
"""

from webhook_sensor.inbox.base import BatchSink, InboxStore, describe_target, open_inbox
from webhook_sensor.inbox.records import (
    InboxDataError,
    InboxMessage,
    InboxRecord,
    InboxTarget,
    InboxUnavailable,
    headers_fault,
    is_postgres_url,
    seed_urls_fault,
)
from webhook_sensor.inbox.sqlite import Inbox

__all__ = [
    "BatchSink",
    "Inbox",
    "InboxDataError",
    "InboxMessage",
    "InboxRecord",
    "InboxStore",
    "InboxTarget",
    "InboxUnavailable",
    "describe_target",
    "headers_fault",
    "is_postgres_url",
    "open_inbox",
    "seed_urls_fault",
]
