#!/usr/bin/env bash
# Installs what the passkey code builds against: webauthn-rs verifies
# WebAuthn signatures with OpenSSL, so openssl-sys needs the OpenSSL headers
# (libssl-dev) and pkg-config to find them. The real-browser passkey tests
# (crates/tessera-server/tests/passkeys.rs) also need Chromium, which
# scripts/browser-deps.sh installs. Does nothing when both are there.
set -euo pipefail

if pkg-config --exists openssl 2>/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
    echo "passkeys-deps.sh: need root to apt-get install libssl-dev pkg-config" >&2
    exit 1
fi
echo "passkeys-deps.sh: installing libssl-dev and pkg-config"
[ -n "${TESSERA_APT_UPDATED:-}" ] || { apt-get update -qq >/dev/null; export TESSERA_APT_UPDATED=1; }
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config >/dev/null
