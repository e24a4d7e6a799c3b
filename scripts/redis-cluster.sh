#!/usr/bin/env bash
# Starts or stops a throw-away three-node Redis Cluster on loopback, for the
# tessera-store-redis tests.
#
#   scripts/redis-cluster.sh start [base_port]   # default 7101 -> 7101, 7102, 7103
#   scripts/redis-cluster.sh stop  [base_port]
#   scripts/redis-cluster.sh status [base_port]
#
# Nodes keep nothing on disk (no RDB, no AOF): their working directory is a
# temporary directory per base port, so two clusters on different ports never
# share node configuration files. `start` is idempotent: a cluster that is
# already up and reports cluster_state:ok is left alone; a half-started one
# (some nodes down, or nodes up but never joined) is torn down and rebuilt.
set -euo pipefail

cmd="${1:-}"
base="${2:-7101}"
ports=("$base" "$((base + 1))" "$((base + 2))")
dir="${TMPDIR:-/tmp}/tessera-redis-cluster-$base"

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "redis-cluster.sh: '$1' not found (apt-get install redis-server redis-tools)" >&2; exit 127; }
}

node_up() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }

cluster_ok() {
    local p
    for p in "${ports[@]}"; do
        node_up "$p" || return 1
        redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
    done
    # Every node must know all three masters (a lone node with all slots
    # assigned to itself would also say "ok").
    [ "$(redis-cli -h 127.0.0.1 -p "$base" cluster nodes 2>/dev/null | grep -c master)" -ge 3 ]
}

stop() {
    local p
    for p in "${ports[@]}"; do
        if node_up "$p"; then
            redis-cli -h 127.0.0.1 -p "$p" shutdown nosave >/dev/null 2>&1 || true
        fi
    done
    for p in "${ports[@]}"; do
        for _ in $(seq 1 50); do node_up "$p" || break; sleep 0.1; done
    done
    rm -rf "$dir"
}

start() {
    need redis-server
    need redis-cli
    if cluster_ok; then
        echo "redis cluster already up on ${ports[*]}"
        return 0
    fi
    stop
    mkdir -p "$dir"
    local p
    for p in "${ports[@]}"; do
        redis-server --port "$p" --cluster-enabled yes --cluster-config-file "$dir/nodes-$p.conf" \
            --save "" --appendonly no --daemonize yes --bind 127.0.0.1 --dir "$dir" \
            --logfile "$dir/redis-$p.log" --pidfile "$dir/redis-$p.pid" >/dev/null
    done
    for p in "${ports[@]}"; do
        for _ in $(seq 1 100); do node_up "$p" && break; sleep 0.1; done
        node_up "$p" || { echo "redis-cluster.sh: node $p did not start; see $dir/redis-$p.log" >&2; exit 1; }
    done
    redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1 || {
        cat "$dir/create.log" >&2
        exit 1
    }
    for _ in $(seq 1 200); do
        if cluster_ok; then
            echo "redis cluster up on ${ports[*]}"
            return 0
        fi
        sleep 0.1
    done
    echo "redis-cluster.sh: cluster did not reach cluster_state:ok" >&2
    exit 1
}

case "$cmd" in
    start) start ;;
    stop) stop; echo "redis cluster on ${ports[*]} stopped" ;;
    status) if cluster_ok; then echo ok; else echo down; exit 1; fi ;;
    *) echo "usage: $0 start|stop|status [base_port]" >&2; exit 2 ;;
esac
