#!/usr/bin/env bash
# Installs what the integration tests need on Debian/Ubuntu: coturn's tools
# (turnserver, turnutils_uclient, turnutils_peer, turnutils_stunclient), openssl and
# redis-server (the fleet tests start their own on a loopback port), and python3 (the
# benchmark and the soak, bench/).
#
# Idempotent: does nothing when the tools are already on PATH. Non-interactive; meant
# to run as root on a fresh CI machine (uses sudo when not root and sudo exists).
#
# The coturn package ships a system service. The tests start their own servers on
# random high loopback ports and never use 3478, but a system turnserver must not be
# left running: it is kept from starting during the install and stopped/disabled after.
set -euo pipefail

TOOLS=(turnserver turnutils_uclient turnutils_peer turnutils_stunclient openssl redis-server python3)
# Debian packages that provide them (openssl: `openssl s_client` checks TLS versions).
PACKAGES=(coturn openssl redis-server python3)

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

missing_tools() {
    local t missing=()
    for t in "${TOOLS[@]}"; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    printf '%s\n' "${missing[@]}"
}

# Runs a command as root (directly, or through sudo).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        log "need root (or sudo) to run: $*"
        return 1
    fi
}

# Stops and disables a system service (coturn, redis-server) if one is there: the
# tests start their own servers.
stop_service() {
    local name=$1
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        if systemctl is-active --quiet "$name" 2>/dev/null \
            || systemctl is-enabled --quiet "$name" 2>/dev/null; then
            log "stopping and disabling the $name system service"
            as_root systemctl disable --now "$name" >/dev/null 2>&1 || true
        fi
    elif [ -x "/etc/init.d/$name" ]; then
        # sysvinit (or containers without an init): stopping is harmless when not running.
        as_root "/etc/init.d/$name" stop >/dev/null 2>&1 || true
        if command -v update-rc.d >/dev/null 2>&1; then
            as_root update-rc.d "$name" disable >/dev/null 2>&1 || true
        fi
    fi
}

if [ -z "$(missing_tools)" ]; then
    # Already installed: only make sure a system turnserver is not running.
    if { [ -d /run/systemd/system ] && systemctl is-active --quiet coturn 2>/dev/null; } \
        && { [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; }; then
        stop_service coturn
    fi
    exit 0
fi

log "missing: $(missing_tools | paste -sd' ' -); installing ${PACKAGES[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
    log "apt-get not found: install coturn (turnserver, turnutils_*) with your package manager"
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Keep maintainer scripts from starting the service during the install
# (policy-rc.d exit 101 = "action forbidden"; honoured by invoke-rc.d and
# deb-systemd-invoke). Only when no policy is already in place; removed afterwards.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    added_policy=1
fi
cleanup() {
    if [ "$added_policy" -eq 1 ]; then
        as_root rm -f "$policy" || true
    fi
}
trap cleanup EXIT

as_root apt-get update -qq
as_root apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${PACKAGES[@]}" >/dev/null

stop_service coturn
stop_service redis-server

still_missing="$(missing_tools)"
if [ -n "$still_missing" ]; then
    log "still missing after installing ${PACKAGES[*]}: $(echo "$still_missing" | paste -sd' ' -)"
    exit 1
fi
log "installed: $(command -v turnutils_uclient) $(command -v openssl) $(command -v redis-server)"
