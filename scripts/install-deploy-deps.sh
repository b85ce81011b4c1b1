#!/usr/bin/env bash
# Installs what tests/deploy_templates.rs needs to check the files under deploy/:
# `systemd-analyze` (package systemd), `nft` (nftables) and `iptables-restore` /
# `ip6tables-restore` (iptables). Idempotent: does nothing when all are on PATH.
# Non-interactive; Debian/Ubuntu (apt) only.
#
# It only installs packages: it never starts, enables or masks a service and never
# touches the live firewall (the tests use check modes: `nft -c`,
# `iptables-restore --test`, `systemd-analyze verify`). policy-rc.d forbids the
# package scripts from starting anything while apt runs.
set -euo pipefail

# The tools may live in /usr/sbin, which is not on every user's PATH.
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
{ command -v iptables-restore >/dev/null 2>&1 && command -v ip6tables-restore >/dev/null 2>&1; } \
    || missing+=(iptables)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-deploy-deps: systemd-analyze, nft, iptables-restore and ip6tables-restore already present"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deploy-deps: need ${missing[*]} but apt-get is not available" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# Keep maintainer scripts from starting services (invoke-rc.d honours policy-rc.d,
# exit 101 = "action forbidden"). Only when no policy exists already; removed after.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    made_policy=1
fi
cleanup() {
    if [ "$made_policy" -eq 1 ]; then
        $SUDO rm -f "$policy"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=300 update -q
$SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}"

for tool in systemd-analyze nft iptables-restore ip6tables-restore; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install-deploy-deps: $tool still missing" >&2; exit 1; }
done
echo "install-deploy-deps: installed ${missing[*]}"
