#!/usr/bin/env bash
# Install fio and prepare the headers of exactly the installed fio version, for building the
# xbdev fio engine (crates/fio-engine).
#
# fio ships no development headers, so the engine is compiled against fio's own source tree:
# Debian's source package of the installed fio version (`apt-get source`, which needs a deb-src
# line), configured with fio's `./configure` so that `config-host.h` exists. The tree lives in
# a cache directory outside the repository (fio is GPL-2.0; none of it is committed here).
#
# Usage: setup-fio.sh [--print-dir]
#   Environment:
#     XBDEV_FIO_SRC   where the configured fio source tree goes / is
#                     (default: ${XDG_CACHE_HOME:-$HOME/.cache}/xbdev/fio-src-<version>)
#   With --print-dir, the only line on stdout is the directory of the configured tree
#   (progress goes to stderr); build.rs uses that.
#
# Idempotent: a tree that is already configured for the installed version is reused.
set -euo pipefail

print_dir=0
for arg in "$@"; do
    case "$arg" in
        --print-dir) print_dir=1 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "setup-fio.sh: unknown argument '$arg'" >&2; exit 2 ;;
    esac
done

log() { echo "setup-fio: $*" >&2; }
die() { echo "setup-fio: error: $*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for '$*' (run this script as root once, or install fio and dpkg-dev and add a deb-src line yourself)"
    fi
}

export DEBIAN_FRONTEND=noninteractive
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script supports Debian and derivatives"

apt_updated=0
apt_update() {
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        as_root apt-get update -qq >&2 || die "apt-get update failed"
        apt_updated=1
    fi
}

# 1. fio itself, the C compiler and dpkg-source (for apt-get source).
need=()
dpkg-query -W -f='${Status}' fio 2>/dev/null | grep -q 'install ok installed' || need+=(fio)
command -v dpkg-source >/dev/null 2>&1 || need+=(dpkg-dev)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v make >/dev/null 2>&1 || need+=(make)
if [ "${#need[@]}" -gt 0 ]; then
    apt_update
    log "apt-get install ${need[*]}"
    as_root apt-get install -y -qq "${need[@]}" >&2 || die "apt-get install ${need[*]} failed"
fi

version="$(dpkg-query -W -f='${Version}' fio)"
upstream="${version#*:}"
upstream="${upstream%-*}"
log "installed fio: $version ($(fio --version 2>/dev/null || echo '?'))"

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/xbdev"
src_dir="${XBDEV_FIO_SRC:-$cache_root/fio-src-$version}"
stamp="$src_dir/.xbdev-configured"
# Same switches as Debian's build (debian/rules) minus the GUI and libnbd, which need extra
# libraries and change no structure the engine sees.
configure_flags=(--disable-native --prefix=/usr)
stamp_value="$version ${configure_flags[*]}"

# One setup at a time (parallel cargo builds may all run build.rs).
mkdir -p "$cache_root" "$(dirname "$src_dir")"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache_root/.setup-fio.lock"
    flock 9
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_value" ] && [ -f "$src_dir/config-host.h" ]; then
    log "reusing configured fio $version source at $src_dir"
    [ "$print_dir" -eq 1 ] && echo "$src_dir"
    exit 0
fi

# 2. A deb-src line, so that apt-get source can find the source package.
has_deb_src() {
    grep -rqsE '^[[:space:]]*(deb-src[[:space:]]|Types:.*deb-src)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/
}
if ! has_deb_src; then
    src_list=/etc/apt/sources.list.d/xbdev-deb-src.sources
    log "adding deb-src entries in $src_list"
    tmp="$(mktemp)"
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        # Same archives as the binary entries (deb822 format), for source packages.
        sed -e 's/^Types:[[:space:]]*deb[[:space:]]*$/Types: deb-src/' \
            /etc/apt/sources.list.d/debian.sources > "$tmp"
    elif [ -f /etc/apt/sources.list ] && grep -qE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list; then
        grep -E '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list \
            | sed -e 's/^[[:space:]]*deb[[:space:]]/deb-src /' > "${tmp}.list"
        src_list=/etc/apt/sources.list.d/xbdev-deb-src.list
        mv "${tmp}.list" "$tmp"
    else
        die "no Debian archive found in /etc/apt to derive a deb-src line from"
    fi
    as_root install -m 0644 "$tmp" "$src_list"
    rm -f "$tmp"
    apt_updated=0
    apt_update
fi

# 3. The source of exactly the installed version.
work="$(mktemp -d "${TMPDIR:-/tmp}/xbdev-fio-src.XXXXXX")"
trap 'rm -rf "$work"' EXIT
fetch_source() {
    (cd "$work" && apt-get source -qq -o APT::Sandbox::User=root "fio=$version" >&2)
}
if ! fetch_source; then
    apt_update
    fetch_source || die "apt-get source fio=$version failed (is the deb-src archive reachable?)"
fi
extracted="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'fio-*' | head -n 1)"
[ -n "$extracted" ] && [ -f "$extracted/fio.h" ] && [ -f "$extracted/ioengines.h" ] \
    || die "apt-get source did not produce a fio tree with fio.h and ioengines.h"

# 4. fio's configure produces config-host.h (the CONFIG_* switches its headers depend on).
log "running fio's ./configure"
(cd "$extracted" && ./configure "${configure_flags[@]}" >"$work/configure.log" 2>&1) \
    || { cat "$work/configure.log" >&2; die "fio ./configure failed"; }
[ -f "$extracted/config-host.h" ] || die "fio ./configure did not produce config-host.h"
echo "$stamp_value" > "$extracted/.xbdev-configured"

rm -rf "$src_dir"
mv "$extracted" "$src_dir"
log "fio $version source configured at $src_dir ($upstream)"
[ "$print_dir" -eq 1 ] && echo "$src_dir"
exit 0
