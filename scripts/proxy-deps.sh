#!/usr/bin/env bash
# Installs what the forward-auth and OpenID Connect tests need when missing:
# nginx (Debian's nginx-light, which has auth_request), Caddy (Debian's
# package, when the archive has it) and the test provider's npm packages.
# The tests start nginx, Caddy and the provider themselves, as child
# processes on loopback ports; nothing is started here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

apt_install() {
    if [ "$(id -u)" != 0 ]; then echo "proxy-deps.sh: need root to apt-get install $*" >&2; return 1; fi
    [ -n "${TESSERA_APT_UPDATED:-}" ] || { apt-get update -qq >/dev/null; export TESSERA_APT_UPDATED=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    echo "proxy-deps.sh: installing nginx-light"
    apt_install nginx-light
    # The package starts a system nginx on port 80; the tests run their own.
    (service nginx stop || /usr/sbin/nginx -s stop) >/dev/null 2>&1 || true
fi
if ! command -v caddy >/dev/null; then
    echo "proxy-deps.sh: installing caddy"
    apt_install caddy || echo "proxy-deps.sh: caddy is not installable here; its test will skip" >&2
    (service caddy stop) >/dev/null 2>&1 || true
fi

# The OpenID Connect test provider (Node.js + the oidc-provider package).
"$here/oidc-provider.sh" install
