"""Retries (tenacity) and circuit breakers (pybreaker) around qpipe's outside systems.

`transient` says which errors are worth retrying (a refused connection, a 503, a server that went
away) and which are the caller's fault (bad input, a 4xx): only the first are retried, counted by
a breaker, or retried by Dagster's RetryPolicy. `breakers` keeps each system's breaker state in a
file every process shares, so the exporter, `/ready` and `qpipe doctor` show the same state.
"""
