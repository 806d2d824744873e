#!/usr/bin/env bash
# Makes (or reuses) a Python venv with the official rstream Python SDK, the
# peer of the interop tests (the `interop` test binary, tests/interop/:
# interop_python, webhook_interop, …), and prints the venv's python path on stdout,
# nothing else:
#
#   export RSTREAM_PYTHON=$(bash .ci/python-venv.sh)
#
# Venv: "${RSTREAM_VENV:-$PWD/.venv}". Interpreter used to create it:
# "${PYTHON:-python3}" (>= 3.10). Idempotent: a venv that already holds the
# same requirement (recorded in a stamp file) and can import the SDK is
# reused without running pip; a broken venv is recreated.
set -euo pipefail

# [asgi] is included on purpose: python_peer.py serves HTTP with the SDK's
# ASGI helper (rstream.asgi needs h11).
REQUIREMENT='rstreamlabs-rstream[api,asgi,realtime]>=0.7,<0.8'

venv="${RSTREAM_VENV:-$PWD/.venv}"
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
py="$venv/bin/python"
stamp="$venv/.rstream-interop-requirement"

say() { echo "python-venv: $*" >&2; }

usable() {
    [ -x "$py" ] && "$py" -c 'import rstream, rstream.asgi, h11' >/dev/null 2>&1
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$REQUIREMENT" ] && usable; then
    echo "$py"
    exit 0
fi

if [ -e "$venv" ] && ! "$py" -c 'import sys' >/dev/null 2>&1; then
    if [ -f "$venv/pyvenv.cfg" ]; then
        say "recreating the broken venv $venv"
        rm -rf -- "$venv"
    else
        say "$venv exists but is not a Python venv; set RSTREAM_VENV elsewhere"
        exit 1
    fi
fi

if [ ! -x "$py" ]; then
    base="${PYTHON:-python3}"
    if ! command -v "$base" >/dev/null 2>&1; then
        say "no '$base' on PATH (set PYTHON to a Python >= 3.10 interpreter)"
        exit 1
    fi
    if ! "$base" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
        say "$base is $("$base" -V 2>&1); the rstream Python SDK needs >= 3.10"
        exit 1
    fi
    say "creating $venv with $("$base" -V 2>&1)"
    "$base" -m venv "$venv" >&2 || {
        say "'$base -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
        exit 1
    }
fi

say "installing $REQUIREMENT"
"$py" -m pip install --quiet --disable-pip-version-check "$REQUIREMENT" >&2
if ! usable; then
    say "the venv still cannot import rstream after pip install"
    exit 1
fi
printf '%s\n' "$REQUIREMENT" >"$stamp"
echo "$py"
