#!/usr/bin/env bash
# Installs the SMTP server the mail tests send to (crates/tessera-server/tests/mail.rs):
# aiosmtpd from PyPI, in its own virtual environment at /opt/tessera-smtp
# (TESSERA_SMTP_VENV to change it). Each test starts its own server on a
# free loopback port and reads the messages it stored (a Maildir).
# Does nothing when the venv has it already.
set -euo pipefail

venv="${TESSERA_SMTP_VENV:-/opt/tessera-smtp}"
if [ -x "$venv/bin/aiosmtpd" ]; then exit 0; fi
echo "smtp-deps.sh: installing aiosmtpd into $venv"
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    [ -n "${TESSERA_APT_UPDATED:-}" ] || { apt-get update -qq >/dev/null; export TESSERA_APT_UPDATED=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q aiosmtpd
[ -x "$venv/bin/aiosmtpd" ] || { echo "smtp-deps.sh: $venv/bin/aiosmtpd is missing after the install" >&2; exit 1; }
