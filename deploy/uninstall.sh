#!/usr/bin/env bash
# Remove the Sluice service that deploy/install.sh installed (run as root;
# `make uninstall-service`): stops and disables it, removes the unit and PREFIX (the venv).
# The config, the secrets and the usage data stay unless --purge.
#
#   deploy/uninstall.sh [--prefix DIR] [--config-dir DIR] [--unit-dir DIR] [--state-dir DIR]
#                       [--purge]
set -euo pipefail

prefix=/opt/sluice
config_dir=/etc/sluice
unit_dir=/etc/systemd/system
# DynamicUser=yes keeps the data in /var/lib/private/sluice; /var/lib/sluice links to it.
state_dir=/var/lib/sluice
purge=0

die() { echo "uninstall.sh: $*" >&2; exit 1; }
note() { echo "uninstall.sh: $*"; }

while (( $# )); do
    opt=$1
    case $opt in
        --prefix=*|--config-dir=*|--unit-dir=*|--state-dir=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"
                                                              continue ;;
        --prefix|--config-dir|--unit-dir|--state-dir) (( $# >= 2 )) || die "$opt needs a value" ;;
    esac
    case $opt in
        --prefix) prefix=${2%/}; shift 2 ;;
        --config-dir) config_dir=${2%/}; shift 2 ;;
        --unit-dir) unit_dir=${2%/}; shift 2 ;;
        --state-dir) state_dir=${2%/}; shift 2 ;;
        --purge) purge=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
                   exit 0 ;;
        *) die "unknown option '$opt' (see --help)" ;;
    esac
done
for dir in "$prefix" "$config_dir" "$unit_dir" "$state_dir"; do
    [[ $dir == /?* ]] || die "'$dir' is not an absolute path"
done

(( EUID == 0 )) || die "run as root (sudo): the files are in system directories"

if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    # The gateway drains on SIGTERM (TimeoutStopSec=45s), so this can take a while.
    systemctl disable --now sluice.service 2>/dev/null || true
fi
if [[ -e $unit_dir/sluice.service ]]; then
    rm -f "$unit_dir/sluice.service"
    note "removed $unit_dir/sluice.service"
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        systemctl daemon-reload
        systemctl reset-failed sluice.service 2>/dev/null || true
    fi
fi

# rm -rf only a directory install.sh made: a mistyped --prefix must not take /usr with it.
if [[ -e $prefix/.sluice-install ]]; then
    rm -rf -- "$prefix"
    note "removed $prefix"
elif [[ -e $prefix ]]; then
    die "$prefix has no .sluice-install: not removed (is --prefix right?)"
fi

if (( ! purge )); then
    note "kept $config_dir and $state_dir (--purge removes them)"
    exit 0
fi
rm -f -- "$config_dir/config.yaml" "$config_dir/sluice.env"
if [[ -d $config_dir ]]; then
    rmdir -- "$config_dir" 2>/dev/null || note "kept $config_dir: it holds other files"
fi
if [[ -L $state_dir ]]; then
    data=$(readlink -f -- "$state_dir")
    rm -f -- "$state_dir"
    [[ $data == */sluice ]] && rm -rf -- "$data"
elif [[ -d $state_dir && $state_dir == */sluice ]]; then
    rm -rf -- "$state_dir"
elif [[ -e $state_dir ]]; then
    die "$state_dir does not end in /sluice: not removed (is --state-dir right?)"
fi
note "purged the config, the secrets and $state_dir"
