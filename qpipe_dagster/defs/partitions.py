"""The one partitioning of qpipe: a dynamic partition per concept slug."""

from dagster import DynamicPartitionsDefinition

# The name on its own, typed str: instance calls take it, and the definition's .name is Optional.
CONCEPTS_PARTITIONS = "concepts"
concepts_partitions = DynamicPartitionsDefinition(name=CONCEPTS_PARTITIONS)
