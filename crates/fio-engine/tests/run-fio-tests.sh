#!/usr/bin/env bash
# Runs fio with the xbdev engine: verify jobs (several block sizes and checksums, iodepth 1 and
# 128, numjobs 2 in process and thread mode) on malloc and on an aio file, trim jobs, every rw=
# pattern, batching, offset/size, several files per job, sync variants, interrupts, early job
# ends, error reporting, and a negative control that verify must catch.
#
# Usage: crates/fio-engine/tests/run-fio-tests.sh [-k FILTER]
#   Environment:
#     XBDEV_FIO_ENGINE   the engine to test (default: build it with cargo, release profile)
#     XBDEV_FIO_PROFILE  cargo profile to build when XBDEV_FIO_ENGINE is unset (default release)
#   -k FILTER runs only the tests whose name contains FILTER.
# Exits non-zero when any test fails; the last line is "N passed, N failed".
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
crate="$(dirname "$here")"
repo="$(cd "$crate/../.." && pwd)"
filter=""
while [ $# -gt 0 ]; do
    case "$1" in
        -k) filter="${2:-}"; shift 2 ;;
        *) echo "usage: $0 [-k FILTER]" >&2; exit 2 ;;
    esac
done

command -v fio >/dev/null 2>&1 || { echo "fio is not installed: run crates/fio-engine/setup-fio.sh" >&2; exit 2; }

engine="${XBDEV_FIO_ENGINE:-}"
if [ -z "$engine" ]; then
    profile="${XBDEV_FIO_PROFILE:-release}"
    echo "building the engine (cargo build --profile $profile -p xbdev-fio)"
    (cd "$repo" && cargo build --profile "$profile" -p xbdev-fio) || { echo "build failed" >&2; exit 2; }
    tdir="${CARGO_TARGET_DIR:-$repo/target}"
    case "$profile" in dev) sub=debug ;; *) sub="$profile" ;; esac
    engine="$tdir/$sub/libfio_xbdev.so"
fi
[ -f "$engine" ] || { echo "engine not found at $engine" >&2; exit 2; }
echo "engine: $engine ($(fio --version))"

work="$(mktemp -d "${TMPDIR:-/tmp}/xbdev-fio-tests.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# fio writes verify state files into its working directory.
cd "$work"
aio_img="$work/aio.img"
truncate -s 256M "$aio_img"

cat > "$work/malloc.json" <<EOF
{"reactor": {"cores": [0], "idle": "adaptive", "pin": false},
 "base_devices": [
   {"method": "malloc", "params": {"name": "malloc0", "size_mb": 128, "block_size": 512}},
   {"method": "malloc", "params": {"name": "malloc1", "size_mb": 64, "block_size": 4096}}]}
EOF
cat > "$work/aio.json" <<EOF
{"reactor": {"cores": [0], "idle": "adaptive", "pin": false},
 "base_devices": [
   {"method": "aio", "params": {"name": "aio0", "filename": "$aio_img", "block_size": 512}}]}
EOF

passed=0
failed=0
failures=()
TIMEOUT=300

selected() { [ -z "$filter" ] || [[ "$1" == *"$filter"* ]]; }

# run_fio NAME ARGS... : must exit 0 and report no error.
run_fio() {
    local name="$1"; shift
    selected "$name" || return 0
    local log="$work/$name.log"
    local t0=$SECONDS
    timeout -k 10 "$TIMEOUT" fio --ioengine="external:$engine" "$@" >"$log" 2>&1
    local rc=$?
    if [ $rc -eq 0 ] && ! grep -qE 'err= *[1-9]|verify: bad|fio: .*error|xbdev: (error|warn)' "$log"; then
        passed=$((passed + 1)); echo "ok    $name ($((SECONDS - t0))s)"
    else
        failed=$((failed + 1)); failures+=("$name"); echo "FAIL  $name (rc=$rc)"; tail -n 25 "$log" | sed 's/^/      /'
    fi
}

# expect_fail NAME PATTERN ARGS... : must exit non-zero and print PATTERN (extended regex).
expect_fail() {
    local name="$1" pattern="$2"; shift 2
    selected "$name" || return 0
    local log="$work/$name.log"
    timeout -k 10 "$TIMEOUT" fio --ioengine="external:$engine" "$@" >"$log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -ne 137 ] && grep -qE "$pattern" "$log"; then
        passed=$((passed + 1)); echo "ok    $name (failed as expected)"
    else
        failed=$((failed + 1)); failures+=("$name"); echo "FAIL  $name (rc=$rc, wanted failure matching '$pattern')"; tail -n 25 "$log" | sed 's/^/      /'
    fi
}

# check NAME COMMAND... : a shell check that must succeed.
check() {
    local name="$1"; shift
    selected "$name" || return 0
    local log="$work/$name.log"
    if "$@" >"$log" 2>&1; then
        passed=$((passed + 1)); echo "ok    $name"
    else
        failed=$((failed + 1)); failures+=("$name"); echo "FAIL  $name"; tail -n 25 "$log" | sed 's/^/      /'
    fi
}

M=(--xbdev_conf="$work/malloc.json")
A=(--xbdev_conf="$work/aio.json")
COMMON=(--name=t --group_reporting --exitall_on_error=1)

# --- verify matrix: backend x checksum x block size x iodepth ------------------------------
for be in malloc aio; do
    if [ $be = malloc ]; then conf=("${M[@]}"); dev=malloc0; else conf=("${A[@]}"); dev=aio0; fi
    for v in crc32c md5 pattern; do
        vopt=(--verify="$v")
        [ $v = pattern ] && vopt+=(--verify_pattern=0x5a3c0ff1)
        for bs in 4k 16k 128k; do
            for qd in 1 128; do
                run_fio "verify-$be-$v-bs$bs-qd$qd" "${COMMON[@]}" "${conf[@]}" --filename=$dev \
                    --rw=randwrite --bs=$bs --iodepth=$qd --size=16m "${vopt[@]}"
            done
        done
    done
    run_fio "verify-$be-bsrange-qd32" "${COMMON[@]}" "${conf[@]}" --filename=$dev \
        --rw=randwrite --bsrange=512-256k --iodepth=32 --size=32m --verify=crc32c
done

# --- numjobs 2, process and thread mode, both IO paths ---------------------------------------
for be in malloc aio; do
    if [ $be = malloc ]; then conf=("${M[@]}"); dev=malloc0; else conf=("${A[@]}"); dev=aio0; fi
    for mode in inline reactor; do
        for tm in process thread; do
            topt=(); [ $tm = thread ] && topt=(--thread)
            run_fio "numjobs2-$be-$mode-$tm" "${COMMON[@]}" "${conf[@]}" --filename=$dev "${topt[@]}" \
                --xbdev_mode=$mode --numjobs=2 --offset_increment=32m --size=32m \
                --rw=randwrite --bs=4k --iodepth=128 --verify=crc32c
        done
    done
done

# fio calls setup in the job itself (after init) without create_serialize.
for tm in process thread; do
    topt=(); [ $tm = thread ] && topt=(--thread)
    run_fio "no-create-serialize-$tm" "${COMMON[@]}" "${M[@]}" --filename=malloc0 "${topt[@]}" --create_serialize=0 \
        --numjobs=2 --offset_increment=32m --size=16m --rw=randwrite --bs=4k --iodepth=16 --verify=crc32c
done

# --- reactor path over the verify basics ------------------------------------------------------
for bs in 4k 64k; do
    for qd in 1 128; do
        run_fio "reactor-verify-malloc-bs$bs-qd$qd" "${COMMON[@]}" "${M[@]}" --filename=malloc1 \
            --xbdev_mode=reactor --rw=randwrite --bs=$bs --iodepth=$qd --size=16m --verify=md5
    done
done

# --- trim ---------------------------------------------------------------------------------------
for be in malloc aio; do
    if [ $be = malloc ]; then conf=("${M[@]}"); dev=malloc0; else conf=("${A[@]}"); dev=aio0; fi
    run_fio "trim-$be-randtrim" "${COMMON[@]}" "${conf[@]}" --filename=$dev --rw=randtrim --bs=64k --iodepth=16 --size=32m
done
# Write a pattern, check it in a later job, trim it, check it reads back as zeroes: one fio run,
# stonewalled jobs (thread mode: the jobs share the instance, so malloc data persists too).
trim_seq() {  # trim_seq CONF DEVICE MODE
    XB_ENGINE=$engine XB_CONF=$1 XB_FILE=$2 XB_MODE=$3 XB_BS=64k XB_SIZE=8m \
        fio "$here/jobs/trim-sequence.fio" > "$work/trimseq.out" 2>&1 || { cat "$work/trimseq.out"; return 1; }
    cat "$work/trimseq.out"
    [ "$(grep -c 'err= 0' "$work/trimseq.out")" -eq 4 ]
}
for mode in inline reactor; do
    check "trim-malloc-then-zero-$mode" trim_seq "$work/malloc.json" malloc1 $mode
    check "trim-aio-then-zero-$mode" trim_seq "$work/aio.json" aio0 $mode
done
run_fio "trim-malloc-trimwrite" "${COMMON[@]}" "${M[@]}" --filename=malloc1 --rw=trimwrite --bs=16k --iodepth=8 --size=16m

# --- every rw= pattern --------------------------------------------------------------------------
for rw in read write randread randwrite rw randrw trim randtrim trimwrite randtrimwrite; do
    run_fio "rw-$rw" "${COMMON[@]}" "${M[@]}" --filename=malloc0 --rw=$rw --bs=8k --iodepth=16 --size=16m
done
run_fio "rw-randrw-verify" "${COMMON[@]}" "${M[@]}" --filename=malloc0 --rw=randrw --rwmixread=30 --bs=4k \
    --iodepth=32 --size=16m --verify=crc32c

# --- batching, offset/size, several files, sync variants, direct/buffered ------------------
run_fio "batch-submit-complete" "${COMMON[@]}" "${M[@]}" --filename=malloc0 --rw=randwrite --bs=4k --iodepth=64 \
    --iodepth_batch_submit=16 --iodepth_batch_complete_min=8 --iodepth_batch_complete_max=32 --size=16m --verify=crc32c
run_fio "batch-aio" "${COMMON[@]}" "${A[@]}" --filename=aio0 --rw=randread --bs=4k --iodepth=128 \
    --iodepth_batch_submit=32 --iodepth_batch_complete_min=16 --size=16m
check "offset-size-honoured" bash -c "
    fio --ioengine='external:$engine' ${COMMON[*]} ${M[*]} --filename=malloc1 --rw=write --bs=64k --offset=8m --size=8m \
        --output-format=terse --terse-version=3 --write_iolog='$work/iolog' >'$work/offset.out' &&
    awk '/malloc1 write/ { if (\$3 < 8388608 || \$3 + \$4 > 16777216) bad=1; n++ } END { exit (bad || n != 128) }' '$work/iolog'"
run_fio "two-files-per-job" "${COMMON[@]}" "${M[@]}" --filename=malloc0:malloc1 --rw=randwrite --bs=4k --iodepth=32 \
    --size=32m --verify=crc32c
run_fio "two-files-per-job-thread-numjobs2" "${COMMON[@]}" "${M[@]}" --filename=malloc0:malloc1 --thread --numjobs=2 \
    --offset_increment=16m --rw=randwrite --bs=4k --iodepth=32 --size=16m --verify=md5
run_fio "fsync-fdatasync" "${COMMON[@]}" "${A[@]}" --filename=aio0 --rw=randwrite --bs=4k --iodepth=8 --size=8m \
    --fsync=16 --fdatasync=5 --end_fsync=1 --fsync_on_close=1
run_fio "sync-file-range" "${COMMON[@]}" "${M[@]}" --filename=malloc0 --rw=write --bs=4k --iodepth=4 --size=4m \
    --sync_file_range=write:8
run_fio "direct" "${COMMON[@]}" "${A[@]}" --filename=aio0 --direct=1 --rw=randwrite --bs=4k --iodepth=16 --size=8m --verify=crc32c
run_fio "spin-0-sleeps-at-once" "${COMMON[@]}" "${A[@]}" --filename=aio0 --xbdev_spin_us=0 --rw=randwrite --bs=4k --iodepth=32 --size=8m --verify=crc32c
run_fio "idle-poll-never-sleeps" "${COMMON[@]}" "${A[@]}" --filename=aio0 --xbdev_idle=poll --rw=randwrite --bs=4k --iodepth=32 --size=8m --verify=crc32c
run_fio "buffered" "${COMMON[@]}" "${A[@]}" --filename=aio0 --direct=0 --buffered=1 --rw=randwrite --bs=4k --iodepth=16 --size=8m --verify=crc32c

# --- data persists across runs on aio; verify catches wrong data (negative control) -----------
run_fio "persist-write" "${COMMON[@]}" "${A[@]}" --filename=aio0 --rw=write --bs=64k --iodepth=16 --size=16m \
    --verify=crc32c --do_verify=0
run_fio "persist-verify-only" "${COMMON[@]}" "${A[@]}" --filename=aio0 --rw=write --bs=64k --iodepth=16 --size=16m \
    --verify=crc32c --verify_only=1
run_fio "control-write-pattern" "${COMMON[@]}" "${A[@]}" --filename=aio0 --rw=write --bs=4k --iodepth=16 --size=4m \
    --verify=pattern --verify_pattern=0x11 --do_verify=0
expect_fail "control-verify-detects-mismatch" "verify|bad pattern|pattern" "${COMMON[@]}" "${A[@]}" --filename=aio0 \
    --rw=write --bs=4k --iodepth=16 --size=4m --verify=pattern --verify_pattern=0x22 --verify_only=1

# --- lifecycle: early job end, interrupts, engine help, errors ------------------------------
cat > "$work/early.fio" <<EOF
[global]
ioengine=external:$engine
xbdev_conf=$work/malloc.json
rw=randwrite
bs=4k
iodepth=32
size=16m
verify=crc32c
[short]
filename=malloc0
[long]
filename=malloc1
loops=4
EOF
run_early() { fio "$@" "$work/early.fio"; }
check "early-end-process" run_early
check "early-end-thread" run_early --thread

interrupt() {  # interrupt MODE SIGNAL: a long job must stop within 20 s of the signal
    local topt=() ; [ "$1" = thread ] && topt=(--thread)
    setsid fio --ioengine="external:$engine" --name=t "${M[@]}" --filename=malloc0 "${topt[@]}" --numjobs=2 \
        --rw=randrw --bs=4k --iodepth=64 --time_based --runtime=120 --output=/dev/null &
    local pid=$!
    sleep 2
    kill -"$2" -- -"$pid" 2>/dev/null || kill -"$2" "$pid"
    local t0=$SECONDS
    while kill -0 "$pid" 2>/dev/null; do
        if [ $((SECONDS - t0)) -gt 20 ]; then
            echo "fio still running 20 s after SIG$2"; kill -KILL -- -"$pid" 2>/dev/null; return 1
        fi
        sleep 0.2
    done
    wait "$pid"; local rc=$?
    echo "fio exited with $rc after $((SECONDS - t0)) s"
    # fio reports the signal as a non-zero exit; a crash (SIGSEGV/SIGABRT) gives 128+11/6.
    [ $rc -ne 139 ] && [ $rc -ne 134 ]
}
for tm in process thread; do
    check "interrupt-int-$tm" interrupt $tm INT
    check "interrupt-term-$tm" interrupt $tm TERM
done

check "enghelp-lists-options" bash -c "fio --enghelp='$engine' | tee /dev/stderr | grep -q xbdev_conf &&
    fio --enghelp='$engine' | grep -q xbdev_cores && fio --enghelp='$engine' | grep -q xbdev_idle &&
    fio --enghelp='$engine' | grep -q xbdev_mode && fio --enghelp='$engine' | grep -q xbdev_spin_us"
expect_fail "error-unknown-device" "unknown device 'nosuch'" "${COMMON[@]}" "${M[@]}" --filename=nosuch --rw=read --size=1m
expect_fail "error-no-config" "no xbdev config" "${COMMON[@]}" --filename=malloc0 --rw=read --size=1m
expect_fail "error-bad-config" "cannot load xbdev config" "${COMMON[@]}" --xbdev_conf="$work/missing.json" \
    --filename=malloc0 --rw=read --size=1m
expect_fail "error-bad-cores" "invalid xbdev_cores" "${COMMON[@]}" "${M[@]}" --xbdev_cores=0-x --filename=malloc0 --rw=read --size=1m
expect_fail "error-misaligned" "not a non-zero multiple of the block size 4096" "${COMMON[@]}" "${M[@]}" \
    --filename=malloc1 --rw=read --bs=512 --size=1m
run_fio "reactor-cores-override" "${COMMON[@]}" "${M[@]}" --xbdev_mode=reactor --xbdev_cores=1 --xbdev_idle=poll \
    --filename=malloc1 --rw=randwrite --bs=4k --iodepth=16 --size=8m --verify=crc32c

# --- the sample job file shipped with the crate ---------------------------------------------
check "example-malloc-verify" env XBDEV_FIO_ENGINE="$engine" bash -c "cd '$crate/examples' && fio malloc-verify.fio"

for f in "${failures[@]}"; do echo "failed: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
