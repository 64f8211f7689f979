"""Code location of each `dagster-daemon` in test_two_hosts: the real qstash_inbox_sensor (inbox
and registry from QPIPE_INBOX_URL / QPIPE_CONCEPTS_URL) ticking every second, and a stand-in
concept_pipeline job whose runs stay queued (nothing needs to execute to count them). Batches of
3 messages, so a burst takes several ticks and both deployments' sensors take part."""

from dagster import Definitions, asset, define_asset_job

from qpipe_dagster.defs.partitions import concepts_partitions
from qpipe_dagster.defs.triggers import build_qstash_inbox_sensor


@asset(partitions_def=concepts_partitions)
def concept_probe() -> None:
    """Stands in for the concept assets (their runs are counted, never executed)."""


defs = Definitions(
    assets=[concept_probe],
    jobs=[define_asset_job("concept_pipeline", selection=[concept_probe])],
    sensors=[build_qstash_inbox_sensor(minimum_interval_seconds=1, batch_size=3)],  # both get work
)
