#!/usr/bin/env bash
# Compare the xbdev fio engine with fio's own engines on this machine, 4 KiB random reads at
# QD32 and QD128:
#   1. fio's built-in --ioengine=null            vs  xbdev on a null bdev      (goal >= 0.9x)
#   2. fio's --ioengine=io_uring on a file       vs  xbdev aio bdev, same file (goal >= 1.0x)
# plus, for information, the xbdev reactor path (xbdev_mode=reactor) on both.
#
# What the two sides of the io_uring pair use (the same 1 GiB file, O_DIRECT, 4 KiB, the same
# iodepth, fio's default batching: iodepth_batch_submit=1 and iodepth_batch_complete_min=1,
# the job thread on the same CPU, no polled IO (fio's hipri=0), no SQ polling thread):
#   - fio io_uring, "defaults": what a user gets with --ioengine=io_uring --direct=1
#     (fixedbufs=0, registerfiles=0, sqthread_poll=0, hipri=0); fio sets up its ring with
#     COOP_TASKRUN, SINGLE_ISSUER and DEFER_TASKRUN and makes one io_uring_enter per commit
#     (submit + reap), blocking in io_uring_enter when getevents finds no completion;
#   - fio io_uring, "fixedbufs": the same plus --fixedbufs=1 --registerfiles=1, because the
#     xbdev aio backend registers its file and its DMA buffer memory with its ring;
#   - xbdev aio, inline (the default xbdev_mode): the job thread owns an io_uring channel over
#     the file (COOP_TASKRUN, SINGLE_ISSUER, DEFER_TASKRUN, registered file, registered
#     buffers, READ_FIXED), one io_uring_enter per commit (submit + reap), and in getevents
#     polls its ring for xbdev_spin_us (20) before blocking in io_uring_enter;
#   - xbdev aio, reactor: IO is handed to the reactor thread on REACTOR_CPU, which owns the
#     ring: this uses a second CPU, so it is listed for information only.
#
# Each pair runs BENCH_REPEAT times, interleaved (baseline, xbdev, baseline, ...), so background
# load hits both sides alike; the table shows the median IOPS of each side and their ratio, and
# every sample is listed below it. On a shared machine IOPS follow the CPU share the job thread
# gets, so the table also shows IOPS per CPU-second of the job thread (fio's usr+sys CPU of the
# job, --thread), which background load barely moves; for engines that spin while waiting
# (xbdev inline) that figure counts the spinning too.
#
# Environment:
#   XBDEV_FIO_ENGINE  engine to use (default: cargo build --release -p xbdev-fio)
#   BENCH_RUNTIME     seconds per run (default 5)
#   BENCH_REPEAT      runs per side and workload (default 3)
#   BENCH_FILE        file for the io_uring/aio pair (default: a 1 GiB file in a temp dir; it
#                     is filled with data first so reads really reach the disk)
#   JOB_CPU           CPU of the fio job thread (default 0)
#   REACTOR_CPU       CPU of the xbdev reactor (default 1; idle in the inline path)
#   BENCH_PAIRS       which pairs to run: "null aio" (default), "null" or "aio"
#   BENCH_MODE        thread (default: fio --thread) or process (fio's default, a process
#                     per job)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
runtime="${BENCH_RUNTIME:-5}"
repeat="${BENCH_REPEAT:-3}"
job_cpu="${JOB_CPU:-0}"
reactor_cpu="${REACTOR_CPU:-1}"
mode="${BENCH_MODE:-thread}"
pairs="${BENCH_PAIRS:-null aio}"
case "$mode" in
    thread) mode_arg=(--thread) ;;
    process) mode_arg=() ;;
    *) echo "BENCH_MODE must be thread or process" >&2; exit 2 ;;
esac

command -v fio >/dev/null 2>&1 || { echo "fio is not installed: run crates/fio-engine/setup-fio.sh" >&2; exit 2; }
engine="${XBDEV_FIO_ENGINE:-}"
if [ -z "$engine" ]; then
    (cd "$repo" && cargo build --release -p xbdev-fio >&2)
    engine="${CARGO_TARGET_DIR:-$repo/target}/release/libfio_xbdev.so"
fi
[ -f "$engine" ] || { echo "engine not found at $engine" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/xbdev-fio-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT
file="${BENCH_FILE:-$work/bench.img}"
if [ ! -s "$file" ]; then
    echo "writing a 1 GiB test file at $file" >&2
    fio --name=prep --ioengine=psync --rw=write --bs=1m --size=1g --direct=1 --filename="$file" \
        --output=/dev/null
fi

cat > "$work/null.json" <<EOF
{"reactor": {"cores": [$reactor_cpu], "idle": "adaptive"},
 "base_devices": [{"method": "null", "params": {"name": "null0", "size_mb": 65536, "block_size": 512, "zero_reads": false}}]}
EOF
cat > "$work/aio.json" <<EOF
{"reactor": {"cores": [$reactor_cpu], "idle": "adaptive"},
 "base_devices": [{"method": "aio", "params": {"name": "aio0", "filename": "$file", "block_size": 512}}]}
EOF

common=(--name=bench --rw=randread --bs=4k --time_based --runtime="$runtime" "${mode_arg[@]}"
        --cpus_allowed="$job_cpu" --output-format=terse --terse-version=3)

# iops ARGS...: one run: "IOPS IOPS-per-CPU-second" (terse v3: field 8 read IOPS, 88/89 job
# usr/sys CPU %).
iops() {
    local out
    out="$(fio "${common[@]}" "$@" 2>"$work/err.txt")" || { cat "$work/err.txt" >&2; echo "0 0"; return; }
    echo "$out" | awk -F';' 'NF > 10 { c = ($88 + $89) / 100; printf "%d %d\n", $8, (c > 0 ? $8 / c : 0); exit }'
}

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%d\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

declare -a rows samples
load0="$(cut -d' ' -f1-3 /proc/loadavg)"
# pair LABEL GOAL "BASELINE ARGS" "XBDEV ARGS"
pair() {
    local label="$1" goal="$2" base_args="$3" xb_args="$4" b=() x=() bc=() xc=() r
    for _ in $(seq "$repeat"); do
        # shellcheck disable=SC2086
        r=($(iops $base_args)); b+=("${r[0]}"); bc+=("${r[1]}")
        # shellcheck disable=SC2086
        r=($(iops $xb_args)); x+=("${r[0]}"); xc+=("${r[1]}")
    done
    local bm xm bcm xcm
    bm="$(echo "${b[*]}" | median)"; xm="$(echo "${x[*]}" | median)"
    bcm="$(echo "${bc[*]}" | median)"; xcm="$(echo "${xc[*]}" | median)"
    rows+=("$(awk -v l="$label" -v b="$bm" -v x="$xm" -v bc="$bcm" -v xc="$xcm" -v g="$goal" 'BEGIN {
        r = (b > 0) ? x / b : 0; rc = (bc > 0) ? xc / bc : 0
        printf "%-40s %10d %10d %6.2fx %11d %11d %6.2fx %8s\n", l, b, x, r, bc, xc, rc, g }')")
    samples+=("$label: baseline ${b[*]} | xbdev ${x[*]}")
}

for qd in 32 128; do
    [[ " $pairs " == *" null "* ]] || continue
    pair "null vs xbdev null bdev, QD$qd" ">=0.90x" \
        "--ioengine=null --size=64g --iodepth=$qd" \
        "--ioengine=external:$engine --xbdev_conf=$work/null.json --filename=null0 --iodepth=$qd"
    pair "null vs xbdev null bdev (reactor), QD$qd" "info" \
        "--ioengine=null --size=64g --iodepth=$qd" \
        "--ioengine=external:$engine --xbdev_conf=$work/null.json --xbdev_mode=reactor --filename=null0 --iodepth=$qd"
done
for qd in 32 128; do
    [[ " $pairs " == *" aio "* ]] || continue
    pair "io_uring file vs xbdev aio bdev, QD$qd" ">=1.00x" \
        "--ioengine=io_uring --direct=1 --filename=$file --iodepth=$qd" \
        "--ioengine=external:$engine --xbdev_conf=$work/aio.json --filename=aio0 --iodepth=$qd"
    pair "io_uring fixedbufs vs xbdev aio, QD$qd" ">=1.00x" \
        "--ioengine=io_uring --direct=1 --fixedbufs=1 --registerfiles=1 --filename=$file --iodepth=$qd" \
        "--ioengine=external:$engine --xbdev_conf=$work/aio.json --filename=aio0 --iodepth=$qd"
    pair "io_uring file vs xbdev aio (reactor), QD$qd" "info" \
        "--ioengine=io_uring --direct=1 --filename=$file --iodepth=$qd" \
        "--ioengine=external:$engine --xbdev_conf=$work/aio.json --xbdev_mode=reactor --filename=aio0 --iodepth=$qd"
done

echo
echo "fio $(fio --version | sed 's/^fio-//'), 4 KiB randread, ${runtime}s x $repeat runs per side, $mode mode, job on CPU $job_cpu, reactor on CPU $reactor_cpu, $(nproc) CPUs, load $load0 at start, $(cut -d' ' -f1-3 /proc/loadavg) at end"
printf "%-40s %10s %10s %7s %11s %11s %7s %8s\n" "workload" "base IOPS" "xbdev IOPS" "ratio" "base IOPS/s" "xbdev IOPS/s" "ratio" "goal"
echo "(IOPS/s = IOPS per CPU-second of the job thread; the reactor rows leave out the reactor's CPU)"
printf '%s\n' "${rows[@]}"
echo
echo "samples (IOPS):"
printf '  %s\n' "${samples[@]}"
