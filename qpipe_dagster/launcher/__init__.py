"""Dagster run launchers for qpipe (GPU routing)."""
