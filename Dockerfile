# syntax=docker/dockerfile:1
#
# Sluice container image: one image for every role, chosen by the command.
#   docker run IMAGE migrate                      # create/upgrade the schema
#   docker run IMAGE api --host 0.0.0.0 --port 8000   # REST API, /health, /ready, /metrics
#   docker run IMAGE worker --queue default       # a worker (metrics on :9100)
# Configuration comes from SLUICE_* environment variables (see docs/deployment.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: the sluice wheel plus wheels of all its dependencies ----------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# .dockerignore keeps the virtualenv, tests, deploy files and VCS data out.
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels .

# --- runtime: slim Python with only the installed wheels --------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="Job queue and DAG scheduler whose engine is PostgreSQL" \
      org.opencontainers.image.licenses="MIT"

# tini as PID 1: forwards SIGTERM so workers drain gracefully, and reaps the
# orphaned grandchildren that shell tasks may leave behind (Python does not).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 sluice \
    && useradd --system --uid 10001 --gid sluice --home-dir /home/sluice --create-home \
       --shell /usr/sbin/nologin sluice

# Installed from the builder's wheels only (--no-index): no compiler, no build
# backend and no source tree in the final image. pip byte-compiles at install
# time, so a read-only root filesystem costs nothing at start-up.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels sluice

# Metrics listen on every interface here (the default is loopback): Prometheus
# scrapes a worker from another container or pod.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SLUICE_LOG_FORMAT=json \
    SLUICE_METRICS_HOST=0.0.0.0 \
    HEALTHCHECK_URL=http://127.0.0.1:8000/health

USER 10001:10001
WORKDIR /home/sluice
EXPOSE 8000 9100

# The slim image has no curl. HEALTHCHECK_URL defaults to the API's liveness
# endpoint; a worker container points it at its metrics port instead, and a
# one-shot `migrate` container disables it. (compose.yaml spells out each
# service's check, so it can be read and tested without the image.)
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4)"]

ENTRYPOINT ["/usr/bin/tini", "--", "sluice"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
