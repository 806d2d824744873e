#!/usr/bin/env bash
# Runs the whole test suite, Python interop included, on a fresh machine:
# creates (once) a Python venv with the official Python SDK as the interop
# peer, then runs `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
RSTREAM_PYTHON="$(bash .ci/python-venv.sh)"
export RSTREAM_PYTHON
# Two cores: keep test binaries from starving each other. Through the
# environment (libtest reads RUST_TEST_THREADS) so that "$@" may carry its own
# `-- <test args>`.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-${RSTREAM_TEST_THREADS:-4}}"
exec cargo test --all-features "$@"
