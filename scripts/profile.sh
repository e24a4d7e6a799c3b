#!/usr/bin/env bash
# Instructions per request of each benchmark app and route, counted by
# valgrind's callgrind in process (no sockets, no load generator): unlike CPU
# time, the count does not change with what else the machine is doing, so two
# builds can be compared on a busy machine. Overhead = the app's count minus
# bare axum's `/hello`.
#
#   scripts/profile.sh                         # every app and route below
#   scripts/profile.sh tessera-memory /me      # one pair; keeps its callgrind
#                                              # output in target/profile/ for
#                                              # callgrind_annotate
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
scripts/services.sh >/dev/null
cargo build --release -q -p tessera-bench
bin="${CARGO_TARGET_DIR:-target}/release/tessera-bench"
out=target/profile
mkdir -p "$out"
small=2000
large=12000

# Total instructions of one run of `requests` requests.
count() {
    local app=$1 route=$2 requests=$3 file="$out/callgrind.$1.${2//\//}.$3"
    valgrind --tool=callgrind --callgrind-out-file="$file" -q \
        "$bin" profile --app "$app" --route "$route" --requests "$requests" >/dev/null
    grep -m1 '^summary:' "$file" | awk '{print $2}'
}

# Instructions per request: the difference of two runs over the difference of
# their sizes, so start-up and the warm-up cancel out.
per_request() {
    local a b
    a=$(count "$1" "$2" "$small")
    b=$(count "$1" "$2" "$large")
    echo $(( (b - a) / (large - small) ))
}

if [ $# -eq 2 ]; then
    echo "$1 $2: $(per_request "$1" "$2") instructions/request"
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
