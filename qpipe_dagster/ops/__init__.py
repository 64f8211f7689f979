"""Operations logic (no Dagster imports): backup/restore, retention, env validation, doctor.

The Dagster wiring is in `qpipe_dagster.defs.operations`; the commands in `qpipe_dagster.cli.ops`.
"""
