#!/usr/bin/env bash
# The whole xbdev test suite, real peers included. Installs what it needs on a fresh Debian
# machine (root), builds, runs every stage, and ends with "N passed, N failed".
# Stages that need a peer start it and stop it themselves.
#   XBDEV_SKIP_GUESTS=1  skip the QEMU-guest stages (kernel NVMe/TCP target, vfio, mdadm)
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${XBDEV_SHARED:-$ROOT/../shared}
export CARGO_TERM_COLOR=never
passed=0; failed=0; failed_names=()

stage() { # name, command...
    local name=$1; shift
    echo "=== stage: $name"
    local t0=$SECONDS
    if "$@"; then
        passed=$((passed + 1)); echo "=== ok: $name ($((SECONDS - t0)) s)"
    else
        failed=$((failed + 1)); failed_names+=("$name"); echo "=== FAILED: $name ($((SECONDS - t0)) s)"
    fi
}

retry_once() {
    "$@" && return 0
    echo "=== retrying once: $*"
    "$@"
}

install_prereqs() {
    local need=()
    command -v fio >/dev/null || need+=(fio)
    command -v ip >/dev/null || need+=(iproute2)
    if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    return 0
}

stage "install prerequisites" install_prereqs
stage "cargo fmt --check" cargo fmt --all -- --check
stage "cargo clippy -D warnings" cargo clippy --workspace --all-targets -q -- -D warnings
stage "cargo test (workspace, release)" cargo test --release --workspace -q
stage "cargo build --release" cargo build --release --workspace -q
stage "xbdev-perf on the embedded default config" ./target/release/xbdev-perf -t 1 -w verify -q 32 --idle adaptive

# Stages contributed by the crates (fio engine, peers in QEMU guests).
for s in crates/*/tests/stage-*.sh hugepage-setup/tests/stage-*.sh; do
    [ -e "$s" ] || continue
    case "$s" in
        *guest*) if [ "${XBDEV_SKIP_GUESTS:-0}" = 1 ]; then echo "=== skipped: $s (XBDEV_SKIP_GUESTS=1)"; continue; fi ;;
    esac
    case "$s" in
        # Guests run under software emulation on a loaded machine: one retry for a guest that
        # did not come up or stalled; a real failure fails twice.
        *guest*) stage "$s" retry_once env XBDEV_ROOT="$ROOT" XBDEV_SHARED="$SHARED" bash "$s" ;;
        *) stage "$s" env XBDEV_ROOT="$ROOT" XBDEV_SHARED="$SHARED" bash "$s" ;;
    esac
done

echo
[ $failed -gt 0 ] && printf 'failed stage: %s\n' "${failed_names[@]}"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
