"""Dagster wiring: thin asset, check, sensor and resource definitions around the pure stages."""
