"""The tags qpipe puts on Dagster runs: who launched a run, for which concept, for which
QStash message. The sensor, schedules and alerts write or read them; `qpipe trace` follows a
message to its run through them. Kept free of Dagster so stage code and the CLI can name them."""

from __future__ import annotations

TAG_MESSAGE_ID = "qpipe/message_id"  # the QStash message a sensor run was launched for
TAG_CONCEPT = "qpipe/concept"
TAG_TRIGGER = "qpipe/trigger"  # qstash | recrawl | schedule
TAG_PARTITION = "dagster/partition"  # Dagster's own: the concept of a partitioned run
