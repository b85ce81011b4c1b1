#!/usr/bin/env bash
# Installs what the integration tests need on Debian/Ubuntu: coturn's tools
# (turnserver, turnutils_uclient, turnutils_peer, turnutils_stunclient,
# turnutils_natdiscovery), openssl,
# redis-server (the fleet tests start their own on a loopback port), man (the
# generated man pages must render without warnings) and python3 (the benchmark and
# the soak, bench/), clang (the build compiles the kernel fast path, src/offload),
# haproxy and curl (PROXY protocol and the shared TLS port, tests/proxy_protocol.rs and
# tests/shared_port.rs) and pebble (the ACME test CA and its DNS server, tests/acme.rs);
# and to build tern at all: pkg-config and libssl-dev (the DTLS listeners, src/net/dtls,
# use the system's libssl).
#
# Idempotent: does nothing when the tools are already on PATH. Non-interactive; meant
# to run as root on a fresh CI machine (uses sudo when not root and sudo exists).
#
# The coturn package ships a system service. The tests start their own servers on
# random high loopback ports and never use 3478, but a system turnserver must not be
# left running: it is kept from starting during the install and stopped/disabled after.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

# Each tool with the Debian package that provides it (openssl: `openssl s_client`
# checks TLS versions).
TOOLS=(
    turnserver=coturn
    turnutils_uclient=coturn
    turnutils_peer=coturn
    turnutils_stunclient=coturn
    turnutils_natdiscovery=coturn
    openssl=openssl
    redis-server=redis-server
    man=man-db
    python3=python3
    clang=clang
    haproxy=haproxy
    curl=curl
    pebble=pebble
    pebble-challtestsrv=pebble
    pkg-config=pkg-config
    /usr/include/openssl/ssl.h=libssl-dev
)

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

mapfile -t missing < <(missing_packages "${TOOLS[@]}")
if [ "${#missing[@]}" -eq 0 ]; then
    # Already installed: only make sure a system turnserver is not running.
    if { [ -d /run/systemd/system ] && systemctl is-active --quiet coturn 2>/dev/null; } \
        && { [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; }; then
        stop_service coturn
    fi
    if { [ -d /run/systemd/system ] && systemctl is-active --quiet haproxy 2>/dev/null; } \
        && { [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; }; then
        stop_service haproxy
    fi
    log "ok: coturn's tools, openssl, redis-server, man, python3, clang, haproxy, curl, pebble, pkg-config and libssl-dev already present"
    exit 0
fi

log "installing ${missing[*]}"
apt_install "${missing[@]}"
stop_service coturn
stop_service redis-server
stop_service haproxy
require_tools "${TOOLS[@]}"
log "installed: $(command -v turnutils_uclient) $(command -v openssl) $(command -v redis-server)"
