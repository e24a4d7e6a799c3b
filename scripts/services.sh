#!/usr/bin/env bash
# Makes sure the services the tests talk to are up, starting any that stopped:
# PostgreSQL (127.0.0.1:5432), Redis (127.0.0.1:6379) and a three-node Redis
# Cluster (127.0.0.1:7101-7103). Installs the Debian packages when missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

apt_install() {
    if [ "$(id -u)" != 0 ]; then echo "services.sh: need root to apt-get install $*" >&2; return 1; fi
    [ -n "${TESSERA_APT_UPDATED:-}" ] || { apt-get update -qq >/dev/null; export TESSERA_APT_UPDATED=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# PostgreSQL
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    command -v pg_ctlcluster >/dev/null || apt_install postgresql
    echo "services.sh: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
    for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.2; done
fi
pg_isready -h 127.0.0.1 -p 5432 -q || { echo "services.sh: PostgreSQL is not answering on 127.0.0.1:5432" >&2; exit 1; }

# Redis
if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    command -v redis-server >/dev/null || apt_install redis-server redis-tools
    echo "services.sh: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 50); do redis-cli -p 6379 ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG || { echo "services.sh: Redis is not answering on 127.0.0.1:6379" >&2; exit 1; }

# Redis Cluster for the cluster tests
"$here/redis-cluster.sh" start

# Tests work in throw-away PostgreSQL schemas; under CI (which runs alone)
# drop the ones earlier runs left behind.
if [ -n "${CI:-}" ]; then
    PGOPTIONS="-c client_min_messages=warning" psql -q "postgres://postgres@127.0.0.1:5432/test" -c "DO \$\$ DECLARE s text; BEGIN
        FOR s IN SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tessera\_t\_%' OR nspname LIKE 'tessera\_test\_%' LOOP
            EXECUTE 'DROP SCHEMA ' || quote_ident(s) || ' CASCADE';
        END LOOP; END \$\$;" >/dev/null || echo "services.sh: could not drop old test schemas (continuing)"
fi
