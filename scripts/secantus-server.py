"""Runs SecantusDB for the tests (started by scripts/secantus.sh).

Usage: python secantus-server.py URL_FILE

Binds a free loopback port, writes mongodb://127.0.0.1:PORT to URL_FILE once
it listens, and serves until SIGTERM. Data lives in memory only. The server
class is used directly rather than through `secantusd-py`, because the
command line of SecantusDB 0.7.0b3 reads `[storage] ttl_sweep_seconds` from
its configuration file but never passes it on: the TTL monitor would run only
every 60 s, as MongoDB's does, instead of every second.
"""

import os
import signal
import sys

from secantus.server import SecantusDBServer


def main() -> int:
    url_file = sys.argv[1]
    server = SecantusDBServer(
        host="127.0.0.1",
        port=0,
        storage_path=":memory:",
        replica_set_name="secantus",
        enable_test_commands=False,
        ttl_sweep_seconds=1.0,
        cache_size="256M",
    )

    def stop(signum, frame):
        server.stop()
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    server.start()
    with open(url_file + ".tmp", "w") as out:
        out.write(f"mongodb://127.0.0.1:{server.port}\n")
    os.replace(url_file + ".tmp", url_file)
    server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
