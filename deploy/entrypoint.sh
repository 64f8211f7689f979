#!/bin/sh
# Select the instance config by env, validate the environment for this service, then run it.
#   QPIPE_DEPLOY=prod  -> deploy/dagster.prod.yaml (Postgres, queued runs, retries, monitoring)
#   otherwise          -> dagster.yaml (local SQLite; the repo default)
#   QPIPE_ROLE         -> code-location | webserver | daemon | receiver | backup (env checks)
set -e
mkdir -p "$DAGSTER_HOME"
if [ "${QPIPE_DEPLOY:-local}" = "prod" ]; then
    cp /opt/qpipe/deploy/dagster.prod.yaml "$DAGSTER_HOME/dagster.yaml"
else
    cp /opt/qpipe/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
fi
python -m qpipe_dagster.ops.env --role "${QPIPE_ROLE:-code-location}"
exec "$@"
