#!/usr/bin/env bash
# make test-deploy: the production Docker Compose stack, end to end (qpipe_dagster_tests/deploy).
# Needs a Docker daemon: uses a running one, or (as root) installs docker.io, docker-compose,
# mmdebstrap and caddy with apt and starts dockerd for the run, stopping it afterwards.
# Without either it skips, saying why (exit 0), so `make test` still runs everywhere.
set -uo pipefail
PY=${1:-.venv/bin/python}
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=$(command -v docker || true)

daemon_up() { [ -n "$DOCKER" ] && "$DOCKER" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

started_pid=""
if ! daemon_up; then
    if [ "$(id -u)" != 0 ]; then
        echo "make test-deploy: SKIPPED: no Docker daemon this user can reach, and not root (cannot install or start dockerd); run as root, or start Docker and join the docker group" >&2
        exit 0
    fi
    need=""
    for pair in dockerd:docker.io docker-compose:docker-compose mmdebstrap:mmdebstrap caddy:caddy; do
        command -v "${pair%%:*}" >/dev/null || need="$need ${pair#*:}"
    done
    if [ -n "$need" ]; then
        echo "make test-deploy: apt-get install -y$need"
        apt-get install -y -qq $need >/dev/null || { echo "make test-deploy: SKIPPED: apt-get install$need failed" >&2; exit 0; }
    fi
    DOCKER=/usr/bin/docker
    log=$(mktemp /tmp/qpipe-dockerd.XXXXXX.log)
    dockerd >"$log" 2>&1 &
    started_pid=$!
    for _ in $(seq 60); do daemon_up && break; sleep 1; done
    if ! daemon_up; then
        echo "make test-deploy: SKIPPED: dockerd did not start (see $log):" >&2
        tail -5 "$log" >&2
        kill "$started_pid" 2>/dev/null
        exit 0
    fi
    echo "make test-deploy: started dockerd (pid $started_pid, log $log); it is stopped afterwards"
fi

start=$(date +%s)
QPIPE_TEST_DEPLOY=1 QPIPE_DOCKER="$DOCKER" "$PY" -m pytest qpipe_dagster_tests/deploy -m deploy -q -rs -s -p no:cacheprovider
rc=$?
echo "make test-deploy: $(( $(date +%s) - start ))s, exit $rc"

if [ -n "$started_pid" ]; then
    kill "$started_pid" 2>/dev/null
    for _ in $(seq 30); do kill -0 "$started_pid" 2>/dev/null || break; sleep 1; done
fi
exit $rc
