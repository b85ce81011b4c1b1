#!/usr/bin/env bash
# Installs what tests/nat_topology.rs needs: `ip` (iproute2, for network namespaces
# and veth pairs) and `nft` (nftables, for the NAT routers). Idempotent: does nothing
# when both are already on PATH. Non-interactive; Debian/Ubuntu (apt) only.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

TOOLS=(ip=iproute2 nft=nftables)

mapfile -t missing < <(missing_packages "${TOOLS[@]}")
if [ "${#missing[@]}" -eq 0 ]; then
    log "ok: ip and nft already present"
    exit 0
fi
apt_install "${missing[@]}"
require_tools "${TOOLS[@]}"
log "installed ${missing[*]}"
