"""`qpipe halt`, `resume` and `status`: stop and restart the pipeline's automation, and see it.

The halt record lives in the Dagster instance's key-value store, so every process that shares
the instance (local SQLite or PostgreSQL) sees the same halt, and `resume` knows exactly which
sensors and schedules the halt stopped.
"""
