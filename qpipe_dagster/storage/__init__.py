"""Arrow IPC files for asset outputs: one folder per asset partition, split into parts under 1 MB."""
