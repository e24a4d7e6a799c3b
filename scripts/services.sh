#!/usr/bin/env bash
# Makes sure the services the tests talk to are up, starting any that stopped:
# PostgreSQL (127.0.0.1:5432), MariaDB (127.0.0.1:3306, root without a
# password, database `test`), Redis (127.0.0.1:6379), a three-node Redis
# Cluster (127.0.0.1:7101-7103) and SecantusDB (MongoDB wire protocol, on a
# free loopback port written to /tmp/tessera-secantus/url). Installs the
# Debian and PyPI packages when missing.
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

# MariaDB, for tessera-store-mysql: root may connect over TCP without a
# password (Debian's default root account uses unix_socket authentication).
mariadb_answers() { mariadb -h 127.0.0.1 -P 3306 -u root -e "SELECT 1" >/dev/null 2>&1; }
if ! mariadb_answers; then
    [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server
    echo "services.sh: starting MariaDB"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    # As the machine image starts it (Debian's configuration: user mysql,
    # 127.0.0.1:3306).
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    for _ in $(seq 1 100); do
        mariadb_answers && break
        # Until root may use TCP, configure it over the local socket.
        if mariadb -u root -e "SELECT 1" >/dev/null 2>&1; then
            mariadb -u root -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;
                CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
                GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" || true
        fi
        sleep 0.2
    done
fi
mariadb_answers || { echo "services.sh: MariaDB is not answering on 127.0.0.1:3306 as root" >&2; exit 1; }
mariadb -h 127.0.0.1 -P 3306 -u root -e "CREATE DATABASE IF NOT EXISTS test"

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

# SecantusDB for the MongoDB store's tests
"$here/secantus.sh" start >/dev/null

# Tests work in throw-away PostgreSQL schemas; under CI (which runs alone)
# drop the ones earlier runs left behind.
if [ -n "${CI:-}" ]; then
    PGOPTIONS="-c client_min_messages=warning" psql -q "postgres://postgres@127.0.0.1:5432/test" -c "DO \$\$ DECLARE s text; BEGIN
        FOR s IN SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tessera\_t\_%' OR nspname LIKE 'tessera\_test\_%' LOOP
            EXECUTE 'DROP SCHEMA ' || quote_ident(s) || ' CASCADE';
        END LOOP; END \$\$;" >/dev/null || echo "services.sh: could not drop old test schemas (continuing)"
    mariadb -h 127.0.0.1 -P 3306 -u root -N -e "SELECT schema_name FROM information_schema.schemata
        WHERE schema_name LIKE 'tessera\\_test\\_%' OR schema_name LIKE 'tessera\\_t\\_%'" |
        while read -r db; do mariadb -h 127.0.0.1 -P 3306 -u root -e "DROP DATABASE \`$db\`"; done ||
        echo "services.sh: could not drop old test databases (continuing)"
fi
