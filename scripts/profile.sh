#!/usr/bin/env bash
# Instructions per request of each benchmark app and route, counted by
# valgrind's callgrind in process (no sockets, no load generator): unlike CPU
# time, the count does not change with what else the machine is doing, so two
# builds can be compared on a busy machine. Overhead = the app's count minus
# bare axum's `/hello`.
#
#   scripts/profile.sh                         # every library app and route
#   scripts/profile.sh tessera-memory /me      # one pair; keeps its callgrind
#                                              # output in target/profile/ for
#                                              # callgrind_annotate
#   scripts/profile.sh server                  # the real tessera server: every
#                                              # store and route below
#   scripts/profile.sh server-memory /healthz  # one server pair
#   scripts/profile.sh --top server-memory /api/me
#                                              # and the 25 functions with the
#                                              # most inclusive instructions
#                                              # per request
#
# The real server (`server-<store>`, store = memory, sqlite, postgres or
# redis; routes /healthz, /api/me with the session cookie, /api/me-bearer
# (GET /api/me with an access token), /profile, and /login with real
# argon2id): `tessera-bench profile` builds the router exactly as `tessera
# serve` does (default settings + `--database`/`--session-store`, the same
# tracing subscriber with the access log on, background tasks running), signs
# up and logs in once (HTML form with its CSRF token for the cookie,
# `POST /api/signin` for the token), then drives the route in process.
# Counted: every layer of the router (request ID + access log, metrics,
# compression, security headers, client IP, error pages, HTTP checks, body
# limit, sessions + CSRF), the handler, the store and database calls (their
# threads included: callgrind counts every thread), reading the response
# body to the end. NOT counted, because hyper does it before the router:
# HTTP/1.1 parsing and response encoding, the socket reads and writes and
# their syscalls, the accept loop; `App::serve` adds nothing else per
# request (it only inserts the peer address, `ConnectInfo`, which the
# profile does too). TLS is off, as in the benchmark. The set-up's sign-up
# and logins use cheap argon2id parameters except when `/login` is measured.
#
# Files: target/profile/callgrind.<app>.<route>.<requests>; the per-request
# figure is the difference between a small and a large run divided by the
# difference in requests (start-up and warm-up cancel out); `--top` makes
# the same difference function by function (callgrind_annotate --inclusive).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
top=0
if [ "${1:-}" = --top ]; then top=1; shift; fi
scripts/services.sh >/dev/null
cargo build --release -q -p tessera-bench
bin="${CARGO_TARGET_DIR:-target}/release/tessera-bench"
out=target/profile
mkdir -p "$out"

# Request counts of the two runs: the server's requests are heavier.
sizes() {
    case "$1:$2" in
        server-*:/login) small=4; large=12 ;;
        server-*) small=300; large=1500 ;;
        *) small=2000; large=12000 ;;
    esac
}

# PostgreSQL for server-postgres: a database of its own on the test server,
# made afresh for each run.
pg_db=tessera_bench_profile
pg_url="postgres://postgres@127.0.0.1:5432/$pg_db"
fresh_postgres() {
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $pg_db" >/dev/null
}

file_of() { echo "$out/callgrind.$1.$(echo "$2" | tr -d /).$3"; }

# Total instructions of one run of `requests` requests.
count() {
    local app=$1 route=$2 requests=$3 file
    file=$(file_of "$1" "$2" "$3")
    [ "$app" != server-postgres ] || fresh_postgres
    valgrind --tool=callgrind --separate-recs=40 --callgrind-out-file="$file" -q \
        "$bin" profile --app "$app" --route "$route" --requests "$requests" --postgres-url "$pg_url" >/dev/null
    grep -m1 '^summary:' "$file" | awk '{print $2}'
}

# Instructions per request: the difference of two runs over the difference of
# their sizes, so start-up and the warm-up cancel out.
per_request() {
    local a b
    sizes "$1" "$2"
    if [ "${3:-}" = cached ]; then
        a=$(grep -m1 '^summary:' "$(file_of "$1" "$2" "$small")" | awk '{print $2}')
        b=$(grep -m1 '^summary:' "$(file_of "$1" "$2" "$large")" | awk '{print $2}')
    else
        a=$(count "$1" "$2" "$small")
        b=$(count "$1" "$2" "$large")
    fi
    echo $(( (b - a) / (large - small) ))
}

# Instructions per request of the 25 costliest functions, inclusive (what a
# function and its callees cost; the frames above the request loop, whose
# inclusive cost is the whole request, are left out) and self (where the
# instructions are spent): the function-by-function difference of the two
# runs' profiles over the difference in requests. Recursion levels are
# separate functions (`--separate-recs`), so nested layers of the same boxed
# service type are not counted twice.
top25() {
    local app=$1 route=$2 a b total
    sizes "$app" "$route"
    a=$(file_of "$app" "$route" "$small")
    b=$(file_of "$app" "$route" "$large")
    total=$(per_request "$app" "$route" cached)
    for kind in inclusive self; do
        echo
        echo "top 25 functions by $kind instructions per request ($app $route; total $total):"
        local flag=--inclusive=no
        [ "$kind" = self ] || flag=--inclusive=yes
        awk -v n=$((large - small)) -v total="$total" -v kind="$kind" '
            FNR == 1 { file++ }
            # Lines look like "1,234,567 (12.34%)  file:function [object]".
            match($0, /^ *[0-9,]+ +\([ 0-9.]+%\) +/) {
                count = substr($0, 1, RLENGTH); sub(/\(.*/, "", count); gsub(/[ ,]/, "", count)
                name = substr($0, RLENGTH + 1)
                if (name ~ /PROGRAM TOTALS/) next
                sub(/ \[[^]]*\]$/, "", name)
                sub(/^.*\/(registry\/src\/[^\/]*|rustc\/[0-9a-f]*|crates)\//, "", name)
                if (file == 1) small[name] += count; else large[name] += count
            }
            END {
                for (name in large) {
                    per = (large[name] - small[name]) / n
                    if (per < 1) continue
                    if (kind == "inclusive" && per >= 0.98 * total) continue
                    printf "%12.0f  %s\n", per, name
                }
            }' \
            <(callgrind_annotate "$flag" --auto=no --threshold=100 "$a" 2>/dev/null) \
            <(callgrind_annotate "$flag" --auto=no --threshold=100 "$b" 2>/dev/null) \
            | sort -rn | head -n 25 | cut -c1-220 || true  # head closes the pipe early
    done
}

one() {
    echo "$1 $2: $(per_request "$1" "$2") instructions/request"
    if [ "$top" = 1 ]; then top25 "$1" "$2"; fi
}

if [ $# -eq 2 ]; then
    one "$1" "$2"
    exit 0
fi
if [ "${1:-}" = server ]; then
    printf '%-16s %-15s %12s\n' app route instr/req
    for app in server-memory server-sqlite server-postgres server-redis; do
        for route in /healthz /api/me /api/me-bearer /profile; do
            printf '%-16s %-15s %12s\n' "$app" "$route" "$(per_request "$app" "$route")"
        done
    done
    exit 0
fi
bare=$(per_request bare /hello)
printf '%-24s %-9s %12s %12s\n' app route instr/req overhead
printf '%-24s %-9s %12s %12s\n' bare /hello "$bare" 0
for app in tessera-memory tower-sessions-memory tessera-redis tower-sessions-redis; do
    for route in /login /me /counter; do
        n=$(per_request "$app" "$route")
        printf '%-24s %-9s %12s %12s\n' "$app" "$route" "$n" $(( n - bare ))
    done
done
