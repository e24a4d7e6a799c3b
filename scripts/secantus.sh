#!/usr/bin/env bash
# Starts or stops SecantusDB, a single-node server speaking the MongoDB wire
# protocol, for the tessera-store-mongodb tests. No MongoDB server can be
# installed from the registries this project uses; SecantusDB comes from PyPI.
#
#   scripts/secantus.sh start    # prints the URL, e.g. mongodb://127.0.0.1:40123
#   scripts/secantus.sh stop
#   scripts/secantus.sh status
#
# `start` is idempotent: it installs SecantusDB into a virtual environment if
# it is missing, starts it on a free loopback port in the background unless
# one it started is still answering, and writes the URL (without a database)
# to $TESSERA_SECANTUS_DIR/url (default /tmp/tessera-secantus/url), where the
# tests look for it. Data lives in memory only. Expired documents are swept
# by the TTL monitor every second rather than MongoDB's 60 s, so the TTL test
# is quick; the store does not depend on it. See scripts/secantus-server.py.
set -euo pipefail

cmd="${1:-start}"
venv="${TESSERA_SECANTUS_VENV:-/opt/tessera-secantus}"
dir="${TESSERA_SECANTUS_DIR:-/tmp/tessera-secantus}"
version="0.7.0b3"
python="$venv/bin/python"
here="$(cd "$(dirname "$0")" && pwd)"

answers() {
    # A ping through the driver SecantusDB itself depends on (pymongo).
    [ -f "$dir/url" ] && [ -x "$python" ] || return 1
    "$python" - "$(cat "$dir/url")" <<'EOF' >/dev/null 2>&1
import sys, pymongo
client = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=1000)
client.admin.command("ping")
EOF
}

install() {
    if [ -x "$venv/bin/secantusd-py" ] && "$python" -c "import secantus" 2>/dev/null; then
        return 0
    fi
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
        if [ "$(id -u)" != 0 ]; then echo "secantus.sh: need root to apt-get install python3-venv" >&2; exit 1; fi
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    echo "secantus.sh: installing SecantusDB $version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "SecantusDB==$version"
}

stop() {
    if [ -f "$dir/pid" ]; then
        local pid
        pid="$(cat "$dir/pid")"
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$dir/pid" "$dir/url"
}

start() {
    install
    if answers; then
        cat "$dir/url"
        return 0
    fi
    stop
    mkdir -p "$dir"
    # setsid: the server outlives this script and the shell that ran it. The
    # launcher binds a free port itself and writes the URL once it listens.
    setsid "$python" "$here/secantus-server.py" "$dir/url" >"$dir/log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    for _ in $(seq 1 150); do
        if answers; then
            cat "$dir/url"
            return 0
        fi
        kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
        sleep 0.2
    done
    echo "secantus.sh: SecantusDB did not start; its log:" >&2
    cat "$dir/log" >&2 || true
    stop
    exit 1
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    status)
        if answers; then echo "up: $(cat "$dir/url")"; else echo "down"; exit 1; fi
        ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
