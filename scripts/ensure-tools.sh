#!/usr/bin/env bash
# Installs the real services Courier's tests, `make demo` and `make bench` run against:
#   - redis-server (Debian package), from PATH
#   - garage 2.5.0 (cargo install) in $COURIER_TOOLS/bin (default ~/.cache/courier/tools)
#   - cargo-nextest (the runner of `make test`), from PATH or else cargo install into
#     $COURIER_TOOLS/bin, only with --nextest
#   - promtool (Debian package `prometheus`), only with --prometheus
#   - a Python venv at $COURIER_TOOLS/venv with the packages in scripts/python-tools.txt
#     (kubernetes-validate, jsonschema, pyarrow, ...), only with --python
#   - curl, jq and openssl, which `make demo` uses
# Idempotent: does nothing (quickly) when everything is already there.
#
# Usage: scripts/ensure-tools.sh [--nextest] [--prometheus] [--python]
set -euo pipefail

GARAGE_VERSION=2.5.0
COURIER_TOOLS="${COURIER_TOOLS:-$HOME/.cache/courier/tools}"
GARAGE_BIN="$COURIER_TOOLS/bin/garage"

want_nextest=0
want_prometheus=0
want_python=0
for arg in "$@"; do
    case "$arg" in
        --nextest) want_nextest=1 ;;
        --prometheus) want_prometheus=1 ;;
        --python) want_python=1 ;;
        -h | --help)
            sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "ensure-tools: unknown argument: $arg (usage: $0 [--nextest] [--prometheus] [--python])" >&2
            exit 2
            ;;
    esac
done

log() { echo "ensure-tools: $*"; }

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "ensure-tools: need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        as_root apt-get update
        apt_updated=1
    fi
    log "apt-get install -y $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

# --- redis-server ---------------------------------------------------------------------------
if command -v redis-server >/dev/null 2>&1; then
    log "redis-server present"
else
    log "redis-server missing, installing the Debian package"
    apt_install redis-server
    # The package starts a system-wide instance on 6379; the tests start their own servers.
fi

# --- curl, jq, openssl (make demo drives the API with them) ----------------------------------
missing=()
for tool in curl jq openssl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "missing ${missing[*]}, installing the Debian packages"
    apt_install "${missing[@]}"
fi

# --- garage ---------------------------------------------------------------------------------
garage_version() {
    # `garage --version` prints e.g. "garage v2.5.0 [features: ...]"
    "$GARAGE_BIN" --version 2>/dev/null | head -n1 | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1 || true
}

if [ -x "$GARAGE_BIN" ] && [ "$(garage_version)" = "$GARAGE_VERSION" ]; then
    log "garage $GARAGE_VERSION present"
else
    if [ -x "$GARAGE_BIN" ]; then
        log "garage at $GARAGE_BIN is version '$(garage_version)', want $GARAGE_VERSION"
    else
        log "garage missing at $GARAGE_BIN"
    fi
    cargo=$(command -v cargo || true)
    if [ -z "$cargo" ] && [ -x "$HOME/.cargo/bin/cargo" ]; then
        cargo="$HOME/.cargo/bin/cargo" # rustup's default location, often not on PATH in make
    fi
    if [ -z "$cargo" ]; then
        echo "ensure-tools: cargo is needed to install garage (https://rustup.rs)" >&2
        exit 1
    fi
    log "cargo install garage --version $GARAGE_VERSION --locked --root $COURIER_TOOLS (takes a while)"
    mkdir -p "$COURIER_TOOLS"
    "$cargo" install garage --version "$GARAGE_VERSION" --locked --root "$COURIER_TOOLS"
    if [ "$(garage_version)" != "$GARAGE_VERSION" ]; then
        echo "ensure-tools: $GARAGE_BIN still reports version '$(garage_version)'" >&2
        exit 1
    fi
fi

# --- cargo-nextest (optional) ---------------------------------------------------------------
NEXTEST_VERSION=0.9.143
if [ "$want_nextest" -eq 1 ]; then
    if PATH="$COURIER_TOOLS/bin:$PATH" cargo nextest --version >/dev/null 2>&1; then
        log "cargo-nextest present"
    else
        log "cargo install cargo-nextest --version $NEXTEST_VERSION --locked --root $COURIER_TOOLS"
        mkdir -p "$COURIER_TOOLS"
        cargo install cargo-nextest --version "$NEXTEST_VERSION" --locked --root "$COURIER_TOOLS"
    fi
fi

# --- promtool (optional) --------------------------------------------------------------------
if [ "$want_prometheus" -eq 1 ]; then
    if command -v promtool >/dev/null 2>&1; then
        log "promtool present"
    else
        log "promtool missing, installing the Debian package prometheus"
        apt_install prometheus
    fi
fi

# --- Python tools venv (optional) ----------------------------------------------------------
# One venv outside the clone for every Python tool the checks use. The packages are listed in
# scripts/python-tools.txt (one requirement a line); the venv keeps a copy of the list it was
# last installed from, so pip runs only when the venv is missing or the list changed.
PYTHON_VENV="$COURIER_TOOLS/venv"
PYTHON_TOOLS="$(cd "$(dirname "$0")" && pwd)/python-tools.txt"
if [ "$want_python" -eq 1 ]; then
    if [ -x "$PYTHON_VENV/bin/python" ] && cmp -s "$PYTHON_TOOLS" "$PYTHON_VENV/courier-python-tools.txt"; then
        log "python venv present ($PYTHON_VENV)"
    else
        if [ ! -x "$PYTHON_VENV/bin/python" ]; then
            python=$(command -v python3 || true)
            if [ -z "$python" ] || ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
                log "python3 with venv missing, installing the Debian packages python3 python3-venv"
                apt_install python3 python3-venv
                python=$(command -v python3)
            fi
            log "creating the python venv $PYTHON_VENV"
            mkdir -p "$COURIER_TOOLS"
            "$python" -m venv "$PYTHON_VENV"
        fi
        log "pip install -r $PYTHON_TOOLS into $PYTHON_VENV"
        "$PYTHON_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$PYTHON_TOOLS"
        cp "$PYTHON_TOOLS" "$PYTHON_VENV/courier-python-tools.txt"
    fi
fi

# --- summary --------------------------------------------------------------------------------
log "redis-server: $(command -v redis-server)"
log "garage:       $GARAGE_BIN"
if [ "$want_prometheus" -eq 1 ]; then
    log "promtool:     $(command -v promtool || echo 'NOT FOUND')"
fi
if [ "$want_python" -eq 1 ]; then
    log "python venv:  $PYTHON_VENV"
fi
