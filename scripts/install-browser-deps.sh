#!/usr/bin/env bash
# Installs what tests/browser.rs needs on Debian/Ubuntu: Debian's Chromium
# (/usr/bin/chromium) and the npm package playwright-core in tests/browser/ (pinned in
# tests/browser/package.json / package-lock.json). No browser is downloaded by npm:
# playwright-core drives the system Chromium.
#
# Idempotent: does nothing when /usr/bin/chromium and
# tests/browser/node_modules/playwright-core are already there. Non-interactive; meant
# to run as root on a fresh CI machine (uses sudo when not root and sudo exists).
# Node.js (>= 18) and npm must already be installed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BROWSER_DIR="$ROOT/tests/browser"
CHROMIUM=/usr/bin/chromium
TOOLS=("$CHROMIUM=chromium")

mapfile -t missing < <(missing_packages "${TOOLS[@]}")
if [ "${#missing[@]}" -eq 0 ]; then
    log "chromium already installed ($CHROMIUM)"
else
    log "installing chromium with apt"
    apt_install "${missing[@]}"
    require_tools "${TOOLS[@]}"
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    log "node and npm are required (install Node.js >= 18, e.g. apt-get install nodejs npm)"
    exit 1
fi

if [ -d "$BROWSER_DIR/node_modules/playwright-core" ]; then
    log "playwright-core already installed in $BROWSER_DIR"
else
    log "installing playwright-core in $BROWSER_DIR"
    cd "$BROWSER_DIR"
    # Never download browsers: only the system Chromium is used.
    export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
    if [ -f package-lock.json ]; then
        npm ci --no-audit --no-fund
    else
        npm install --no-audit --no-fund
    fi
fi

log "ok: $("$CHROMIUM" --version 2>/dev/null || echo chromium), playwright-core $(node -p "require('$BROWSER_DIR/node_modules/playwright-core/package.json').version")"
