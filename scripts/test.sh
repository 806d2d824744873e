#!/usr/bin/env bash
# Runs the whole test suite, Python interop included, on a fresh machine:
# creates (once) a Python venv with the official Python SDK as the interop
# peer, installs (once) the Debian packages the tests use as real peers, then
# runs `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
# The SOCKS5 proxy the proxy tests go through and openssl (a DTLS client of
# the dtls tests): apt-get, once, if missing.
bash .ci/debian-packages.sh
RSTREAM_PYTHON="$(bash .ci/python-venv.sh)"
export RSTREAM_PYTHON
# Two cores: keep test binaries from starving each other. Through the
# environment (libtest reads RUST_TEST_THREADS) so that "$@" may carry its own
# `-- <test args>`.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-${RSTREAM_TEST_THREADS:-4}}"
exec cargo test --all-features "$@"
