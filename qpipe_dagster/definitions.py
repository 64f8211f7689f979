"""The one Dagster entry point: `dagster dev -m qpipe_dagster.definitions` or workspace.yaml."""

from dagster import Definitions, load_assets_from_modules, with_source_code_references

from qpipe_dagster.defs import knowledge, validation
from qpipe_dagster.defs.jobs import concept_pipeline_job
from qpipe_dagster.defs.resources import default_resources
from qpipe_dagster.defs.triggers import qstash_inbox_sensor


def build_definitions() -> Definitions:
    """Assemble assets, jobs and resources; production switches come from the environment."""
    return Definitions(
        assets=with_source_code_references(load_assets_from_modules([knowledge, validation])),
        jobs=[concept_pipeline_job],
        sensors=[qstash_inbox_sensor],
        resources=default_resources(),
    )


defs = build_definitions()
