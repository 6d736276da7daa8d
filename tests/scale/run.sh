#!/usr/bin/env bash
# The scale scenarios: failover (Patroni + etcd + HAProxy), PgBouncer in
# transaction mode, reads from a replica, and hosts cut off from the network
# (network namespaces). Every server is a local process started by the tests;
# this script installs the Debian packages they need, runs them, and ends
# whatever they started, even when they fail.
#
#   bash tests/scale/run.sh            (as root; about 3-5 minutes)
#   bash tests/scale/run.sh -k pgbouncer   (extra arguments go to pytest)
set -euo pipefail
cd "$(dirname "$0")/../.."

packages=(pgbouncer postgresql-15-auto-failover patroni etcd-server etcd-client haproxy iproute2)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -x .venv/bin/pytest ] || make .venv/.installed

run_dir=$(mktemp -d /tmp/sluice-scale-XXXXXX)
chmod 755 "$run_dir"
export SLUICE_SCALE=1 SLUICE_SCALE_DIR="$run_dir"

cleanup() {
    # Exactly what this run started: the process groups listed in its pid file,
    # then any namespace carrying its prefix.
    if [ -f "$run_dir/pids" ]; then
        while read -r pid _; do
            kill -KILL -- "-$pid" 2>/dev/null || true
        done < "$run_dir/pids"
    fi
    if [ -f "$run_dir/netns" ]; then
        while read -r ns; do
            ip netns delete "$ns" 2>/dev/null || true
        done < "$run_dir/netns"
    fi
    if [ "${SLUICE_SCALE_KEEP:-0}" = 1 ]; then
        echo "scale: logs kept in $run_dir"
    else
        rm -rf "$run_dir"
    fi
}
trap cleanup EXIT

# SLUICE_SCALE_TESTS picks the modules (default: all of them); arguments go to pytest.
timeout 600 .venv/bin/pytest ${SLUICE_SCALE_TESTS:-tests/scale/scenarios} -p no:cacheprovider -v --timeout 400 "$@"
