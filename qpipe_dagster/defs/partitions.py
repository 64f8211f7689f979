"""The one partitioning of qpipe: a dynamic partition per concept slug."""

from dagster import DynamicPartitionsDefinition

concepts_partitions = DynamicPartitionsDefinition(name="concepts")
