# qpipe project image: code location (gRPC), dagster-webserver, dagster-daemon and the QStash
# receiver all run from it (docker-compose.yml picks the command).
#   CPU (default):  docker build -t qpipe .
#   GPU variant:    docker build -t qpipe:gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 \
#                     --build-arg EXTRAS=prod,gpu .      (needs the NVIDIA container toolkit on the host;
#                     EXTRAS=prod,gpu-cuda13 with a CUDA 13 driver and a cu13x torch index)
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"
ARG EXTRAS="prod"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DAGSTER_HOME=/opt/dagster/home \
    QPIPE_DEPLOY=prod

WORKDIR /opt/qpipe

# torch first and pinned from the CPU index: a bare `torch` would pull the multi-GB CUDA build.
RUN pip install --upgrade pip && pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}"

COPY pyproject.toml README.md ./
COPY qpipe_dagster ./qpipe_dagster
COPY webhook_sensor ./webhook_sensor
RUN pip install ".[${EXTRAS}]"

COPY dagster.yaml ./dagster.yaml
COPY deploy ./deploy
RUN mkdir -p "${DAGSTER_HOME}" && chmod +x deploy/entrypoint.sh \
    && useradd --create-home --uid 10001 qpipe && chown -R qpipe "${DAGSTER_HOME}"
USER qpipe

ENTRYPOINT ["/opt/qpipe/deploy/entrypoint.sh"]
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "qpipe_dagster.definitions"]
