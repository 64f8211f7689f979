# qpipe project image: code location (gRPC), dagster-webserver, dagster-daemon, the QStash
# receiver and the GPU run containers all run from it (docker-compose.yml picks the command).
# BuildKit is required (secret mount for a private CA bundle):
#   CPU (default):  DOCKER_BUILDKIT=1 docker build -t qpipe:latest .
#   GPU variant:    DOCKER_BUILDKIT=1 docker build -t qpipe:gpu \
#                     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 \
#                     --build-arg EXTRAS=prod,gpu .   (needs the NVIDIA container toolkit on the host;
#                     EXTRAS=prod,gpu-cuda13 with a CUDA 13 driver and a cu13x torch index)
# Build arguments that exist for hosts without registry/index access (make test-deploy uses them):
#   BASE_IMAGE          any image with python3 >= 3.11 and python3-venv (default python:3.11-slim)
#   TORCH_INDEX         where torch comes from (default: the PyTorch CPU index)
#   TORCH_TRUSTED_HOST  host of a plain-HTTP TORCH_INDEX (a local wheel folder), else empty
#   secret pip_ca       a CA bundle pip must trust (TLS-inspecting proxy): --secret id=pip_ca,src=FILE
#                       It is mounted for the pip steps only and is never stored in a layer.
ARG BASE_IMAGE=python:3.11-slim
ARG EXTRAS="prod"

# The dependency list alone, out of pyproject.toml: edits elsewhere in that file (tool settings,
# markers) leave requirements.txt byte-identical, so the long dependency layer stays cached.
FROM ${BASE_IMAGE} AS requirements
ARG EXTRAS
COPY pyproject.toml /src/pyproject.toml
RUN python3 -c 'import sys, tomllib; p = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]; \
extras = [e for e in sys.argv[1].split(",") if e]; \
deps = [*p["dependencies"], *(d for e in extras for d in p["optional-dependencies"][e])]; \
open("/requirements.txt", "w").write("\n".join(deps) + "\n")' "${EXTRAS}"

FROM ${BASE_IMAGE}

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"
ARG TORCH_TRUSTED_HOST=""
ARG EXTRAS

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/home \
    QPIPE_DEPLOY=prod \
    NUMBA_CACHE_DIR=/opt/qpipe/numba-cache

# pg_dump for `qpipe backup` (the Dagster instance database): installed when the base lacks it.
RUN command -v pg_dump >/dev/null 2>&1 || { apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*; }

# A venv: Debian's python3 is "externally managed", and python:3.11-slim works the same way.
RUN python3 -m venv /opt/venv

WORKDIR /opt/qpipe

# torch first and pinned from the CPU index: a bare `torch` would pull the multi-GB CUDA build.
# --no-deps: its small dependencies come from PyPI at the constraints.txt pins in the next step.
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    pip install --upgrade pip setuptools wheel \
    && pip install --no-deps --index-url "${TORCH_INDEX}" \
        ${TORCH_TRUSTED_HOST:+--trusted-host "$TORCH_TRUSTED_HOST"} "${TORCH_SPEC}"

# Dependencies of ".[${EXTRAS}]" at the tested pins (constraints.txt), in their own layer.
COPY --from=requirements /requirements.txt ./requirements.txt
COPY constraints.txt ./
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    pip install -c constraints.txt -r requirements.txt

# qpipe itself; `pip check` proves the layers above satisfy ".[${EXTRAS}]".
COPY pyproject.toml README.md ./
COPY qpipe_dagster ./qpipe_dagster
COPY webhook_sensor ./webhook_sensor
RUN pip install --no-deps --no-build-isolation ".[${EXTRAS}]" && rm -rf build *.egg-info && pip check

COPY dagster.yaml ./dagster.yaml
COPY deploy ./deploy
# Every state directory exists, owned by the image's user, before any volume is mounted on it:
# Docker copies a fresh named volume's ownership from the image's directory.
RUN chmod +x deploy/entrypoint.sh \
    && useradd --create-home --uid 10001 qpipe \
    && mkdir -p /opt/dagster/home /opt/dagster/state /opt/dagster/backups /opt/dagster/logs \
       "$NUMBA_CACHE_DIR" \
    && chown -R qpipe:qpipe /opt/dagster "$NUMBA_CACHE_DIR"
USER qpipe
# The numba kernels are compiled here, once, not in each new container's first backtest step
# (minutes on a small host; every GPU-routed run starts a fresh container).
RUN python -m qpipe_dagster.backtest.warm

ENTRYPOINT ["/opt/qpipe/deploy/entrypoint.sh"]
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "qpipe_dagster.definitions"]
