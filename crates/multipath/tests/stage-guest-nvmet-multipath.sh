#!/usr/bin/env bash
# Guest stage: multipath over four NVMe/TCP paths to one namespace of the Linux kernel target
# (nvmet-tcp in a QEMU guest from ../shared/testbed, four listeners on one subsystem).
# Starts the target, then
#   1. runs the ignored test crates/multipath/tests/nvmet_multipath.rs: verified IO through the
#      multipath bdev while paths go down and come back (zero IO errors, failback within the
#      probe interval of a path's connection returning) and while ANA states move IO between
#      the optimized and non-optimized groups;
#   2. runs `xbdev-perf -w verify` on a multipath_devices entry over four `nvmf` config entries
#      while path 2 goes down and comes back (zero errors and mismatches, nonzero IOPS);
#   3. if the fio ioengine is built (crates/fio-engine), runs fio --verify=crc32c through it
#      the same way;
# and stops the target. Prints each check; exits non-zero if one fails.
#   XBDEV_ROOT    repository root (default: three levels up)
#   XBDEV_SHARED  directory holding testbed/ (default: $XBDEV_ROOT/../shared)
set -euo pipefail
ROOT=${XBDEV_ROOT:-$(cd "$(dirname "$0")/../../.." && pwd)}
SHARED=${XBDEV_SHARED:-$ROOT/../shared}
TB=$SHARED/testbed
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
base=$((30000 + ($$ % 5000) * 4))
export NVMET_NAME=${NVMET_NAME:-xbdev-multipath-$$}
export NVMET_HOST_PORTS=${NVMET_HOST_PORTS:-"$base $((base + 1)) $((base + 2)) $((base + 3))"}
export NVMET_NAMESPACES=1 NVMET_SIZE_MB=${NVMET_SIZE_MB:-64}
tmp=$(mktemp -d /tmp/xbdev-mp-stage.XXXXXX)
cleanup() { bash "$TB/nvmet-target.sh" stop >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
fails=0
check() { # description, status
    if [ "$2" = 0 ]; then echo "check: $1: ok"; else echo "check FAILED: $1"; fails=$((fails + 1)); fi
}

cd "$ROOT"
echo "== building"
cargo build --release -q -p xbdev --bin xbdev-perf
cargo test -q --release -p xbdev-multipath --test nvmet_multipath --no-run

echo "== starting the kernel target with four listeners"
info=$(bash "$TB/nvmet-target.sh" start)
echo "$info"
eval "$(echo "$info" | grep -E '^NVMET_(ADDR|PORTS|NQN)=' | sed 's/^\(NVMET_[A-Z]*\)=\(.*\)$/export \1="\2"/')"
export NVMET_SCRIPT="$TB/nvmet-target.sh"
read -r -a PORTS <<< "$NVMET_PORTS"

echo "== 1. failover, failback and ANA through the multipath bdev (Rust test)"
# The library's log lines (reconnect attempts and the like) go to a file, shown on failure.
rc=0
cargo test -q --release -p xbdev-multipath --test nvmet_multipath -- --ignored --nocapture --test-threads 1 \
    > "$tmp/test.out" 2>&1 || rc=$?
grep -v '^  \[log' "$tmp/test.out"
[ $rc = 0 ] || { echo "-- log of the failed run:"; grep '^  \[log' "$tmp/test.out" | tail -n 60; }
check "nvmet_multipath test (every check above)" $rc

echo "== 2. xbdev-perf -w verify over four nvmf config entries, path 2 down and up during the run"
{
    printf '{"reactor": {"cores": [0], "idle": "poll"},\n "base_devices": [\n'
    for i in 0 1 2 3; do
        sep=$([ $i -lt 3 ] && echo , || true)
        printf '  {"method": "nvmf", "params": {"name": "nvmet%d", "addr": "%s", "port": %s, "nqn": "%s", "queue_depth": 33, "io_queues": 2, "reconnect_delay_ms": 200, "fast_io_fail_timeout_ms": 0, "ctrl_loss_timeout_ms": 600000}}%s\n' \
            "$i" "$NVMET_ADDR" "${PORTS[$i]}" "$NVMET_NQN" "$sep"
    done
    printf ' ],\n "multipath_devices": [{"name": "mp0", "paths": ["nvmet0n1", "nvmet1n1", "nvmet2n1", "nvmet3n1"],\n'
    printf '   "policy": "queue_length", "probe_interval_us": 1000000, "no_path_timeout_us": 60000000}]}\n'
} > "$tmp/mp.json"
cat "$tmp/mp.json"
"$TARGET_DIR/release/xbdev-perf" -c "$tmp/mp.json" -b mp0 -w verify -o 4k -q 16 -t 24 > "$tmp/perf.out" 2>&1 &
perf=$!
sleep 7
bash "$TB/nvmet-target.sh" path-down 2 && echo "  path 2 down at $(date +%T)"
sleep 7
bash "$TB/nvmet-target.sh" path-up 2 && echo "  path 2 up at $(date +%T)"
rc=0; wait $perf || rc=$?
cat "$tmp/perf.out"
check "xbdev-perf verify exits 0 (no IO error, no verify mismatch)" $rc
iops=$(awk '/^Total/ {print int($3)}' "$tmp/perf.out")
[ "${iops:-0}" -gt 0 ]; check "xbdev-perf moved IO (${iops:-0} IOPS)" $?

if [ -f crates/fio-engine/Cargo.toml ]; then
    echo "== 3. fio --verify=crc32c through the xbdev ioengine, path 1 down and up during the run"
    rc=0
    cargo build --release -q -p xbdev-fio || rc=$?
    check "the fio ioengine builds" $rc
    if [ $rc = 0 ]; then
        # Writes with crc32c checksums, checked while writing (verify_backlog) and after.
        fio --name=mp --ioengine="external:$TARGET_DIR/release/libfio_xbdev.so" --xbdev_conf="$tmp/mp.json" \
            --filename=mp0 --rw=randwrite --bs=4k --iodepth=16 --size=16m --loops=2 --verify=crc32c \
            --verify_backlog=256 --do_verify=1 > "$tmp/fio.out" 2>&1 &
        fio=$!
        sleep 6
        bash "$TB/nvmet-target.sh" path-down 1 && echo "  path 1 down at $(date +%T)"
        sleep 6
        bash "$TB/nvmet-target.sh" path-up 1 && echo "  path 1 up at $(date +%T)"
        wait $fio || rc=$?
        cat "$tmp/fio.out"
        grep -q 'err= 0' "$tmp/fio.out" || rc=1
        check "fio verify=crc32c through the multipath bdev: exit 0, err=0" $rc
    fi
else
    echo "== 3. skipped: the fio ioengine (crates/fio-engine) is not in this tree"
fi

echo
if [ $fails -gt 0 ]; then
    echo "stage-guest-nvmet-multipath: $fails check(s) failed"
    exit 1
fi
echo "stage-guest-nvmet-multipath: all checks passed"
