#!/usr/bin/env bash
# The test command: brings up what the tests need, then runs every test of
# the workspace against real PostgreSQL, Redis, a Redis Cluster and SQLite.
#
# A test that cannot reach a service prints "SKIPPED: …". Under CI (or with
# TESSERA_REQUIRE_SERVICES=1) such tests fail instead, and this script also
# fails if any skip message appears.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
scripts/browser-deps.sh
scripts/proxy-deps.sh  # nginx, Caddy and the OpenID Connect test provider (npm ci)
if [ -n "${CI:-}" ]; then export TESSERA_REQUIRE_SERVICES=1; fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
cargo test --workspace --doc 2>&1 | tee -a "$log"
doc_status=${PIPESTATUS[0]}
set -e
if grep -q "SKIPPED:" "$log"; then
    echo "test.sh: some tests were skipped because a service was unreachable:" >&2
    grep "SKIPPED:" "$log" >&2
    if [ -n "${TESSERA_REQUIRE_SERVICES:-}" ]; then exit 1; fi
fi
[ "$status" = 0 ] && [ "$doc_status" = 0 ]
