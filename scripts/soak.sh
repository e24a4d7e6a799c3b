#!/usr/bin/env bash
# Long-form reliability runs (short forms run in `cargo test`):
#   scripts/soak.sh                      # 1,000,000 sessions per store
#   TESSERA_SOAK_SESSIONS=200000 scripts/soak.sh
#   TESSERA_SOAK_STORES=memory,redis scripts/soak.sh
#   TESSERA_CRASH_ROUNDS=20 scripts/soak.sh crash
# Results (one Markdown row per store) are appended to target/soak-report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
export TESSERA_SOAK_SESSIONS="${TESSERA_SOAK_SESSIONS:-1000000}"
export TESSERA_SOAK_REPORT="${TESSERA_SOAK_REPORT:-$PWD/target/soak-report.md}"
mkdir -p "$(dirname "$TESSERA_SOAK_REPORT")"
case "${1:-soak}" in
    soak)
        cargo test --release -p tessera-server --test soak -- --nocapture --test-threads 1
        echo "results appended to $TESSERA_SOAK_REPORT"
        ;;
    crash)
        export TESSERA_CRASH_ROUNDS="${TESSERA_CRASH_ROUNDS:-20}"
        cargo test --release -p tessera-server --test crash -- --nocapture --test-threads 1
        ;;
    faults)
        cargo test --release -p tessera-server --test store_faults --test store_outage -- --nocapture
        ;;
    *)
        echo "usage: scripts/soak.sh [soak|crash|faults]" >&2
        exit 2
        ;;
esac
