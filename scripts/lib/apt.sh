# shellcheck shell=bash
# Shared by scripts/install-*.sh (sourced, not run): logging, running as root, and
# installing missing tools from Debian/Ubuntu packages. Each script names the tools it
# needs with the package that provides each; only missing ones are installed, so the
# scripts are idempotent and quick on a machine that has everything.
#
# Works as root without sudo (a fresh CI machine) and as a user with sudo. Package
# scripts are kept from starting services while apt runs: the tests start their own
# servers and never touch the live system.

# The tools may live in /usr/sbin, which is not on every user's PATH.
export PATH="$PATH:/usr/sbin:/sbin"

LOG_NAME="$(basename "$0" .sh)"

log() { printf '%s: %s\n' "$LOG_NAME" "$*" >&2; }

# Runs a command as root: directly, or through sudo (which asks for a password only
# when there is a terminal to ask on).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root (or sudo) to run: $*"
        return 1
    fi
}

# Prints, one per line and each once, the packages of the TOOL=PACKAGE pairs whose
# tool is not found (a name on PATH, or an absolute path: a program, or a file such as
# a library's header).
missing_packages() {
    local pair tool package seen=" "
    for pair in "$@"; do
        tool=${pair%%=*}
        package=${pair#*=}
        if ! command -v "$tool" >/dev/null 2>&1 && ! [[ $tool == /* && -e $tool ]] \
            && [[ $seen != *" $package "* ]]; then
            seen+="$package "
            printf '%s\n' "$package"
        fi
    done
}

# Fails, naming them, unless every TOOL of the TOOL=PACKAGE pairs is found.
require_tools() {
    local still
    still="$(missing_packages "$@" | paste -sd' ' -)"
    if [ -n "$still" ]; then
        log "still missing after the install: $still"
        exit 1
    fi
}

APT_POLICY=/usr/sbin/policy-rc.d
APT_ADDED_POLICY=0
APT_UPDATED=0

# Removes the policy-rc.d that apt_install put in place (none that was there before).
apt_restore_policy() {
    if [ "$APT_ADDED_POLICY" -eq 1 ]; then
        as_root rm -f "$APT_POLICY" || true
        APT_ADDED_POLICY=0
    fi
}

# Installs PACKAGE... with apt, non-interactively, keeping existing config files.
# The package lists are updated once per run. While apt runs, a policy-rc.d answering
# 101 ("action forbidden", honoured by invoke-rc.d and deb-systemd-invoke) keeps the
# maintainer scripts from starting services; it is only added when no policy exists,
# and removed on exit.
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        log "need $* but apt-get is not available: install them with your package manager"
        exit 1
    fi
    if [ ! -e "$APT_POLICY" ]; then
        trap apt_restore_policy EXIT
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $APT_POLICY && chmod 755 $APT_POLICY"
        APT_ADDED_POLICY=1
    fi
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q)
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root "${apt[@]}" update
        APT_UPDATED=1
    fi
    as_root "${apt[@]}" install -y --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}
