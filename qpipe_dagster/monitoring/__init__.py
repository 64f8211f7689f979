"""Pipeline metrics for Prometheus, read from Dagster's instance and qpipe's state at scrape time.

`state` reads qpipe's own stores (inbox, registry, backups, state paths, GPU, breakers) without
Dagster; `instance` reads Dagster's run storage and event log; `collector` turns both into
Prometheus metric families; `server` serves them (`qpipe metrics serve`, `python -m
qpipe_dagster.monitoring`). Nothing is parsed from log lines, so a restarted exporter shows the
same numbers.
"""
