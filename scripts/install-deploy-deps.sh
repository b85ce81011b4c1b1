#!/usr/bin/env bash
# Installs what tests/deploy_templates.rs needs to check the files under deploy/:
# `systemd-analyze` (package systemd), `nft` (nftables) and `iptables-restore` /
# `ip6tables-restore` (iptables). Idempotent: does nothing when all are on PATH.
# Non-interactive; Debian/Ubuntu (apt) only.
#
# It only installs packages: it never starts, enables or masks a service and never
# touches the live firewall (the tests use check modes: `nft -c`,
# `iptables-restore --test`, `systemd-analyze verify`).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

TOOLS=(
    systemd-analyze=systemd
    nft=nftables
    iptables-restore=iptables
    ip6tables-restore=iptables
)

mapfile -t missing < <(missing_packages "${TOOLS[@]}")
if [ "${#missing[@]}" -eq 0 ]; then
    log "ok: systemd-analyze, nft, iptables-restore and ip6tables-restore already present"
    exit 0
fi
apt_install "${missing[@]}"
require_tools "${TOOLS[@]}"
log "installed ${missing[*]}"
