#!/usr/bin/env bash
# Installs Debian's Chromium for the browser test (tests/e2e), unless a chromium is already on PATH.
# Idempotent; needs root (or sudo) and the Debian archive. Playwright drives this binary through
# `executable_path`, so no Playwright browser download is needed.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
