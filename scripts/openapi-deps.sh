#!/usr/bin/env bash
# Installs the OpenAPI validator the API document test runs
# (crates/tessera-server/tests/openapi.rs): the Python
# openapi-spec-validator, from PyPI, or Debian's package when pip cannot.
# Does nothing when python3 can import it already.
set -euo pipefail

have() { python3 -c 'import openapi_spec_validator' >/dev/null 2>&1; }
if have; then exit 0; fi
echo "openapi-deps.sh: installing openapi-spec-validator"
if ! command -v python3 >/dev/null; then
    [ -n "${TESSERA_APT_UPDATED:-}" ] || { apt-get update -qq >/dev/null; export TESSERA_APT_UPDATED=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip >/dev/null
fi
python3 -m pip install -q openapi-spec-validator 2>/dev/null \
    || python3 -m pip install -q --break-system-packages openapi-spec-validator 2>/dev/null \
    || {
        [ -n "${TESSERA_APT_UPDATED:-}" ] || { apt-get update -qq >/dev/null; export TESSERA_APT_UPDATED=1; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-openapi-spec-validator >/dev/null
    }
have || { echo "openapi-deps.sh: openapi-spec-validator is still not importable" >&2; exit 1; }
