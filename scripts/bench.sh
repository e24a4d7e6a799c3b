#!/usr/bin/env bash
# The benchmark command: installs what it needs from Debian's packages when
# missing (wrk, redis-server, PostgreSQL), builds in release mode and runs
# every measurement, writing docs/benchmarks.md, docs/benchmarks.json and
# docs/benchmarks.svg. On the 2-core machine the measurements take about 7
# minutes, server rows included, after the release build (about 8 minutes
# on a clean clone; its time is stated in the report): under 15 in all.
# `scripts/bench.sh --quick` is a 3-minute smoke test.
# Method and figures: docs/benchmarks.md.
#
# `scripts/bench.sh server` runs only the rows of the real `tessera` server
# (issue #17; about 2 minutes once built): the release binary on each session
# store against bare axum, tower-sessions and the Express + express-session
# app of the seeds' tutorials (crates/tessera-bench/express, installed from
# the npm registry into target/express-bench). It keeps the library figures
# already in docs/benchmarks.json. `--note TEXT` puts a line under the table.
#
# `scripts/bench.sh signup-flood` runs one measurement alone (under 2
# minutes): a login's latency from one address while another floods
# sign-ups, against the release `tessera` server (docs/reliability.md).
set -euo pipefail
cd "$(dirname "$0")/.."

# One build of both binaries: the `tessera` binary and tessera-bench then
# share one feature set, so the server's library is compiled once.
build() { cargo build --release -p tessera-server -p tessera-bench --bins; }
bench="${CARGO_TARGET_DIR:-target}/release/tessera-bench"

if [ "${1:-}" = signup-flood ]; then
    build
    exec "$bench" "$@"
fi

missing=()
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v wrk >/dev/null || missing+=(wrk)
command -v redis-server >/dev/null || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v taskset >/dev/null || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then echo "bench.sh: need root to apt-get install ${missing[*]}" >&2; exit 1; fi
    echo "bench.sh: installing ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The Express peer, from the npm registry (again when its package.json changed).
express=target/express-bench
mkdir -p "$express"
if ! cmp -s crates/tessera-bench/express/package.json "$express/package.json" || [ ! -d "$express/node_modules" ]; then
    echo "bench.sh: installing the Express app's packages (npm)"
    cp crates/tessera-bench/express/package.json "$express/"
    (cd "$express" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi
cp crates/tessera-bench/express/app.js "$express/"

started=$(date +%s)
build
exec "$bench" --build-secs "$(($(date +%s) - started))" "$@"
