#!/usr/bin/env bash
# Installs what the real-browser tests (crates/tessera-server/tests/browser.rs)
# need: Debian's Chromium and its ChromeDriver, at /usr/bin/chromium and
# /usr/bin/chromedriver. Does nothing when both are there.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
    echo "browser-deps.sh: need root to apt-get install chromium chromium-driver" >&2
    exit 1
fi
echo "browser-deps.sh: installing chromium and chromium-driver"
[ -n "${TESSERA_APT_UPDATED:-}" ] || { apt-get update -qq >/dev/null; export TESSERA_APT_UPDATED=1; }
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
/usr/bin/chromium --version
/usr/bin/chromedriver --version
