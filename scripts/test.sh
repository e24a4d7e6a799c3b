#!/usr/bin/env bash
# The test command: brings up what the tests need, then runs every test of
# the workspace against real PostgreSQL, Redis, a Redis Cluster and SQLite.
#
# Every test binary runs even when an earlier one fails (--no-fail-fast);
# the end of the output is a summary with one line per binary (passed,
# failed, its own time) and the wall time of the whole run.
#
# A test that cannot reach a service prints "SKIPPED: …". Under CI (or with
# TESSERA_REQUIRE_SERVICES=1) such tests fail instead, and this script also
# fails if any skip message appears.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
scripts/services.sh
scripts/browser-deps.sh
scripts/passkeys-deps.sh  # OpenSSL headers for webauthn-rs
scripts/proxy-deps.sh  # nginx, Caddy and the OpenID Connect test provider (npm ci)
scripts/openapi-deps.sh  # the OpenAPI validator of tests/openapi.rs
scripts/smtp-deps.sh  # aiosmtpd, the SMTP server of tests/mail.rs
if [ -n "${CI:-}" ]; then export TESSERA_REQUIRE_SERVICES=1; fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
cargo test --workspace --doc --no-fail-fast 2>&1 | tee -a "$log"
doc_status=${PIPESTATUS[0]}
set -e
finished=$(date +%s)

# One line per test binary: cargo prints "Running <target> (<path>)" (or
# "Doc-tests <crate>") before a binary's tests and "test result: …" after.
# A binary that dies without a result line (a crash, an abort) says so.
summary() {
    awk '
        function flush() {
            if (name != "") {
                if (result == "") { printf "%-58s %s\n", name, "NO RESULT (crashed or killed?)"; bad++ }
                else { printf "%-58s %s\n", name, result }
            }
            name = ""; result = ""
        }
        /^ +Running / {
            flush()
            if ($2 == "unittests") { target = $3; path = $4 } else { target = $2; path = $3 }
            gsub(/[()]/, "", path); n = split(path, parts, "/"); bin = parts[n]; sub(/-[0-9a-f]+$/, "", bin)
            name = ($2 == "unittests") ? bin " (unit tests, " target ")" : target " (" bin ")"
            next
        }
        /^ +Doc-tests / { flush(); name = "doc-tests " $2; next }
        /^test result: / {
            line = $0; sub(/^test result: /, "", line)
            ok = (line ~ /^ok/) ? "ok    " : "FAILED"
            if (ok == "FAILED") bad++
            passed = line; sub(/.*ok\. |.*FAILED\. /, "", passed)
            split(passed, f, "; ")
            time = line; sub(/.*finished in /, "", time)
            result = sprintf("%s %s, %s, %s, %s", ok, f[1], f[2], f[3], time)
            total_passed += f[1] + 0; total_failed += f[2] + 0
            next
        }
        END {
            flush()
            printf "%s\n", "----------------------------------------------------------------------"
            printf "%d passed, %d failed in all; %d binaries failed or died\n", total_passed, total_failed, bad + 0
        }
    ' "$log"
}
echo
echo "==================== test.sh summary (one line per test binary) ===================="
summary
echo "wall time: $((finished - started)) s (services and dependencies included)"
if grep -q "SKIPPED:" "$log"; then
    echo "test.sh: some tests were skipped because a service was unreachable:" >&2
    grep "SKIPPED:" "$log" >&2
    if [ -n "${TESSERA_REQUIRE_SERVICES:-}" ]; then exit 1; fi
fi
[ "$status" = 0 ] && [ "$doc_status" = 0 ]
