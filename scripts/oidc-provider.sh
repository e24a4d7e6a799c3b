#!/usr/bin/env bash
# The local OpenID Connect provider used by the tests (tests/oidc-provider):
#
#   scripts/oidc-provider.sh install        npm ci when node_modules is missing
#   scripts/oidc-provider.sh start PORT     start on 127.0.0.1:PORT in the background
#   scripts/oidc-provider.sh stop PORT      stop the one started on PORT
#   scripts/oidc-provider.sh run PORT       run in the foreground (what the tests do)
#
# Environment for start/run: OIDC_REDIRECT_URIS (comma-separated, the test
# client's allowed redirect URIs), OIDC_REQUIRE_AUTH_TIME ("0": auth_time only
# when requested). The login form takes any account name (no password); see
# tests/oidc-provider/provider.mjs.
set -euo pipefail
dir="$(cd "$(dirname "$0")/../tests/oidc-provider" && pwd)"
command="${1:-}"

install() {
    command -v node >/dev/null || { echo "oidc-provider.sh: node is not installed" >&2; exit 1; }
    if [ ! -d "$dir/node_modules/oidc-provider" ]; then
        echo "oidc-provider.sh: npm ci in tests/oidc-provider"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}

case "$command" in
    install) install ;;
    run)
        install >&2
        port="${2:?usage: oidc-provider.sh run PORT}"
        exec env PORT="$port" node "$dir/provider.mjs"
        ;;
    start)
        install
        port="${2:?usage: oidc-provider.sh start PORT}"
        log="${TMPDIR:-/tmp}/tessera-oidc-provider-$port.log"
        PORT="$port" nohup node "$dir/provider.mjs" >"$log" 2>&1 &
        echo $! >"${TMPDIR:-/tmp}/tessera-oidc-provider-$port.pid"
        for _ in $(seq 1 100); do
            if node -e "fetch('http://127.0.0.1:$port/.well-known/openid-configuration').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"; then
                echo "oidc-provider.sh: listening on http://127.0.0.1:$port (log: $log)"; exit 0
            fi
            sleep 0.1
        done
        echo "oidc-provider.sh: the provider did not start; see $log" >&2; exit 1
        ;;
    stop)
        port="${2:?usage: oidc-provider.sh stop PORT}"
        pidfile="${TMPDIR:-/tmp}/tessera-oidc-provider-$port.pid"
        if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
        ;;
    *) echo "usage: oidc-provider.sh install | start PORT | stop PORT | run PORT" >&2; exit 2 ;;
esac
