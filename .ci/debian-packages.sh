#!/usr/bin/env bash
# Installs (once) the Debian packages the tests run as real peers:
# microsocks, the SOCKS5 proxy of tests/client/proxies.rs; openssl, whose
# `s_client -dtls1_2` is a DTLS client of tests/engine/dtls.rs.
set -euo pipefail
if ! command -v microsocks >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "debian-packages: installing microsocks" >&2
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq microsocks >&2
fi
if ! command -v openssl >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "debian-packages: installing openssl" >&2
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq openssl >&2
fi
