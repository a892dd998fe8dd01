#!/usr/bin/env bash
# Install Sluice from this checkout as a systemd service (run as root; `make install-service`).
#
#   deploy/install.sh [--prefix DIR] [--config-dir DIR] [--unit-dir DIR] [--python PYTHON]
#                     [--no-start]
#
# Creates a venv in PREFIX/venv and installs the package into it (again on every run: that is
# an upgrade), puts the example config and an empty secrets file in CONFIG-DIR unless they are
# there already (never overwritten), installs the unit, and starts the service when its config
# validates. pip's own settings apply (PIP_INDEX_URL, PIP_FIND_LINKS, ...).
set -euo pipefail

prefix=/opt/sluice
config_dir=/etc/sluice
unit_dir=/etc/systemd/system
python=python3
start=1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

die() { echo "install.sh: $*" >&2; exit 1; }
note() { echo "install.sh: $*"; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    cat <<EOF

Options (defaults):
  --prefix DIR       the venv goes to DIR/venv ($prefix)
  --config-dir DIR   config.yaml and sluice.env ($config_dir)
  --unit-dir DIR     where sluice.service goes ($unit_dir)
  --python PYTHON    the interpreter the venv is made from, 3.11 or newer ($python)
  --no-start         install files only; do not run systemctl
EOF
}

# A path the unit can hold unquoted and sed can substitute: absolute, plain characters.
checked_dir() {
    local dir=${2%/}
    [[ $dir =~ ^(/[A-Za-z0-9._+-]+)+$ ]] || die "$1 must be an absolute path of plain characters" \
        "(letters, digits, . _ + -), not '$2'"
    echo "$dir"
}

while (( $# )); do
    opt=$1
    case $opt in
        --prefix=*|--config-dir=*|--unit-dir=*|--python=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"
                                                           continue ;;
        --prefix|--config-dir|--unit-dir|--python) (( $# >= 2 )) || die "$opt needs a value" ;;
    esac
    case $opt in
        --prefix) prefix=$(checked_dir "$opt" "$2"); shift 2 ;;
        --config-dir) config_dir=$(checked_dir "$opt" "$2"); shift 2 ;;
        --unit-dir) unit_dir=$(checked_dir "$opt" "$2"); shift 2 ;;
        --python) python=$2; shift 2 ;;
        --no-start) start=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$opt' (see --help)" ;;
    esac
done

(( EUID == 0 )) || die "run as root (sudo): the files go to system directories"
[[ -f $repo/pyproject.toml && -f $here/sluice.service ]] || die "$repo is not a Sluice checkout"
command -v "$python" >/dev/null || die "no '$python' here; pass --python"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$python is older than Python 3.11"

for dir in "$prefix" "$config_dir"; do
    case $dir/ in
        /home/*|/root/*|/run/user/*) note "warning: the service cannot see $dir (ProtectHome=yes)" ;;
        /tmp/*|/var/tmp/*) note "warning: the service sees its own /tmp, not $dir (PrivateTmp=yes)" ;;
    esac
done

# --- the package, in its own venv --------------------------------------------------------------
venv=$prefix/venv
install -d -m 0755 "$prefix"
if ! "$venv/bin/python" -c '' 2>/dev/null; then
    note "creating $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
fi
echo "Sluice, installed by $here/install.sh; deploy/uninstall.sh removes this directory." \
    > "$prefix/.sluice-install"

# pip builds in the source tree it is given: build from a copy, so that the checkout gets no
# root-owned build/ or egg-info, and large local folders (.venv, .git) are not copied around.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
tar -C "$repo" --exclude-vcs --exclude=./.venv --exclude=./.clients --exclude=node_modules \
    --exclude=__pycache__ --exclude='*.egg-info' --exclude='.*_cache' --exclude=./build \
    --exclude=./dist --exclude=./.sluice --exclude=./data --exclude=./bench --exclude=./tests \
    -cf - . | tar -C "$stage" -xf -
note "installing the package into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$stage"
note "$("$venv/bin/sluice" version)"

# --- config and secrets: created once, never overwritten ------------------------------------------
rewrite_paths() {  # the shipped files name the default dirs
    sed -e "s#/opt/sluice/#$prefix/#g" -e "s#/etc/sluice/#$config_dir/#g" "$@"
}

install -d -m 0755 -o root -g root "$config_dir"
config=$config_dir/config.yaml
if [[ -e $config ]]; then
    note "kept $config"
else
    # World-readable: the service runs as a dynamic user, and the config holds env:NAME only.
    rewrite_paths "$here/config.example.yaml" > "$config.new"
    chmod 0644 "$config.new"
    chown root:root "$config.new"
    mv "$config.new" "$config"
    note "wrote $config (an example: edit it)"
fi

env_file=$config_dir/sluice.env
if [[ -e $env_file ]]; then
    note "kept $env_file"
    mode=$(stat -c %a "$env_file")
    [[ $mode == [0-7]00 ]] || note "warning: $env_file holds secrets but has mode $mode (chmod 600)"
else
    (
        umask 077  # never readable by others, not even for a moment
        cat > "$env_file" <<'EOF'
# Secrets for the sluice service, one NAME=value a line; the config names them as env:NAME.
# systemd reads this file as root before it starts the gateway: keep it root-only (0600).
# After a change: systemctl restart sluice
#OPENAI_API_KEY=
#ANTHROPIC_API_KEY=
#GEMINI_API_KEY=
#OPENROUTER_API_KEY=
#SLUICE_KEY_TEAM_A=
#SLUICE_ADMIN_KEY=
EOF
    )
    chown root:root "$env_file"
    chmod 0600 "$env_file"
    note "wrote $env_file (0600: put the provider keys there)"
fi

# --- the unit ----------------------------------------------------------------------------------
install -d -m 0755 "$unit_dir"
rewrite_paths "$here/sluice.service" > "$unit_dir/sluice.service.new"
chmod 0644 "$unit_dir/sluice.service.new"
mv "$unit_dir/sluice.service.new" "$unit_dir/sluice.service"
note "wrote $unit_dir/sluice.service"

# The simple NAME=value subset of systemd's EnvironmentFile= syntax, exported: enough to check
# the config before a start (sourcing the file would run whatever else a line holds).
export_env_file() {
    local line name value
    while IFS= read -r line || [[ -n $line ]]; do
        [[ $line =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=[[:space:]]*(.*)$ ]] || continue
        name=${BASH_REMATCH[1]} value=${BASH_REMATCH[2]}
        value=${value%"${value##*[![:space:]]}"}
        if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then
            value=${BASH_REMATCH[1]}
        fi
        export "$name=$value"
    done < "$1"
}

next_steps() {
    echo "Then:"
    [[ $unit_dir == /etc/systemd/system ]] || echo "  (systemd reads units from" \
        "/etc/systemd/system; link $unit_dir/sluice.service there)"
    echo "  systemctl daemon-reload && systemctl enable sluice && systemctl restart sluice"
    echo "  journalctl -u sluice -f"
}

if (( ! start )); then
    note "--no-start: systemctl not run."
    next_steps
    exit 0
fi
if ! command -v systemctl >/dev/null || [[ ! -d /run/systemd/system ]]; then
    note "systemd is not running here: the service was not started."
    next_steps
    exit 0
fi
systemctl daemon-reload
systemctl enable sluice.service
if ! problems=$( (export_env_file "$env_file"
                  "$venv/bin/sluice" check-config "$config") 2>&1 >/dev/null); then
    echo "$problems" >&2
    note "not started: fix $config or $env_file (above), then: systemctl restart sluice"
    exit 0
fi
# restart, not start: after an upgrade the running gateway drains and the new one starts.
systemctl restart sluice.service
note "started: systemctl status sluice; journalctl -u sluice -f"
