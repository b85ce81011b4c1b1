#!/usr/bin/env bash
# Installs what tests/nat_topology.rs needs: `ip` (iproute2, for network namespaces
# and veth pairs) and `nft` (nftables, for the NAT routers). Idempotent: does nothing
# when both are already on PATH. Non-interactive; Debian/Ubuntu (apt) only.
set -euo pipefail

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-nat-deps: ip and nft already present"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-nat-deps: need ${missing[*]} but apt-get is not available" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=300 update -q
$SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}"

command -v ip >/dev/null 2>&1 || { echo "install-nat-deps: ip still missing" >&2; exit 1; }
command -v nft >/dev/null 2>&1 || { echo "install-nat-deps: nft still missing" >&2; exit 1; }
echo "install-nat-deps: installed ${missing[*]}"
