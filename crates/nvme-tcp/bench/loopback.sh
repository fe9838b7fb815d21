#!/usr/bin/env bash
# NVMe/TCP over loopback, in one go (issue 4): xbdev-perf over our initiator
# (the `nvmf` config method) against our target (examples/nvmf-target.rs,
# null namespace, busy-polling reactor), initiator and target on separate
# cores; then the same workloads on a local null bdev, to show what the
# protocol costs per IO.
#
#   crates/nvme-tcp/bench/loopback.sh [SECONDS] [RUNS]     (default 5 and 3)
#
# Environment:
#   INI_CORE  core of the initiator's reactor (default 0)
#   TGT_CORE  core of the target's reactor (default 1)
#   NICE      nice level of both processes (default 0). Each process runs
#             in a session (autogroup) of its own, whose nice level is set
#             too: with autogroups on, a process's own nice level counts
#             only inside its group. On a machine loaded by others,
#             NICE=-20 (as root) gives both sides the cores they need.
#   PORT      TCP port (default: derived from the PID)
#   TCP_CC    TCP congestion control of the target's connections (default
#             reno: the pacing of BBR, a common system default, holds
#             large transfers back on loopback; "system" keeps the system's)
#   INCAPSULE in-capsule data the target accepts on I/O queues (default
#             131072: 128 KiB writes go in the command capsule, without an
#             R2T round trip; the target's default is 8192)
#
# Prints, per workload, the best of RUNS runs (by IOPS) and every run:
# IOPS, MB/s, average latency, the initiator core's ns per IO (1e9 / IOPS,
# the core never idles at these depths), the protocol's cost per IO (that
# minus the local null bdev's), and how much CPU the target's reactor got
# per IO. The load average before and after is printed: other processes on
# the same cores take time from both sides.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
T=${1:-5}
RUNS=${2:-3}
INI_CORE=${INI_CORE:-0}
TGT_CORE=${TGT_CORE:-1}
NICE=${NICE:-0}
PORT=${PORT:-$((20000 + $$ % 20000))}
TCP_CC=${TCP_CC:-reno}
INCAPSULE=${INCAPSULE:-131072}
NQN=nqn.2024-01.io.xbdev:loopback-bench
cd "$ROOT"
cargo build --release -q -p xbdev --bin xbdev-perf -p xbdev-nvme-tcp --example nvmf-target
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
. "$ROOT/crates/nvme-tcp/bench/common.sh"
write_nvmf_json "$PORT"
cat > "$tmp/null.json" <<EOF
{"reactor": {"cores": [$INI_CORE], "pin": true, "idle": "poll"},
 "base_devices": [{"method": "null", "params": {"name": "Null0", "num_blocks": 1048576, "block_size": 4096,
   "zero_reads": false}}]}
EOF

start_target "$BIN/examples/nvmf-target" "$PORT" || { echo "target did not start" >&2; exit 1; }

# run CONFIG BDEV WORKLOAD SIZE QD -> "iops mib_s avg_us target_cpu_ns"
run() {
  local c0 c1 out
  c0=$(target_cpu_ns)
  out=$(setsid -w "$tmp/niced" "$BIN/xbdev-perf" -c "$1" -b "$2" -w "$3" -o "$4" -q "$5" -t "$T" --json 2>"$tmp/perf.err" < /dev/null) || {
    cat "$tmp/perf.err" >&2
    echo "0 0 0 0"
    return
  }
  c1=$(target_cpu_ns)
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
d = r["devices"][0]
print(d["iops"], d["mib_per_s"], d["latency_us"]["avg"], int(sys.argv[2]) - int(sys.argv[3]))
' "$out" "$c1" "$c0"
}

echo "NVMe/TCP loopback benchmark: initiator core $INI_CORE, target core $TGT_CORE, ${T}s x $RUNS runs, nice $NICE, target congestion control $TCP_CC, in-capsule $INCAPSULE"
echo "load average before: $(cat /proc/loadavg)"
printf '%-22s %-6s %4s %12s %10s %10s %9s %10s %12s\n' \
  workload bdev run IOPS MB/s avg_us ns/IO proto_ns tgt_cpu_ns/IO
for spec in "randread 4k 128" "read 128k 32" "write 128k 32"; do
  set -- $spec
  w=$1 sz=$2 qd=$3
  declare -A best=()
  for dev in nvmf null; do
    if [ $dev = nvmf ]; then cfg=$tmp/nvmf.json b=nvmf0n1; else cfg=$tmp/null.json b=Null0; fi
    best_iops=0 best_line=
    for i in $(seq "$RUNS"); do
      read -r iops mib avg tcpu < <(run "$cfg" "$b" "$w" "$sz" "$qd")
      line=$(python3 -c '
import sys
iops, mib, avg, tcpu, dev = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ns = 1e9 / iops if iops > 0 else 0
t = "%.0f" % (tcpu / (iops * float(sys.argv[6]))) if dev == "nvmf" and iops > 0 else "-"
print("%.0f %.1f %.1f %.1f %s" % (iops, mib * 1048576 / 1e6, avg, ns, t))
' "$iops" "$mib" "$avg" "$tcpu" "$dev" "$T")
      set -- $line
      printf '%-22s %-6s %4s %12s %10s %10s %9s %10s %12s\n' "$w $sz qd$qd" $dev "$i" "$1" "$2" "$3" "$4" "" "$5"
      if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)' "$1" "$best_iops"; then
        best_iops=$1 best_line=$line
      fi
    done
    best[$dev]=$best_line
  done
  set -- ${best[nvmf]}
  n_iops=$1 n_mb=$2 n_avg=$3 n_ns=$4 n_t=$5
  set -- ${best[null]}
  l_iops=$1 l_mb=$2 l_avg=$3 l_ns=$4
  proto=$(python3 -c 'import sys; print("%.1f" % (float(sys.argv[1]) - float(sys.argv[2])))' "$n_ns" "$l_ns")
  printf '%-22s %-6s %4s %12s %10s %10s %9s %10s %12s\n' "$w $sz qd$qd" nvmf best "$n_iops" "$n_mb" "$n_avg" "$n_ns" "$proto" "$n_t"
  printf '%-22s %-6s %4s %12s %10s %10s %9s %10s %12s\n' "$w $sz qd$qd" null best "$l_iops" "$l_mb" "$l_avg" "$l_ns" "" "-"
  unset best
done
echo "load average after: $(cat /proc/loadavg)"
echo "(SPDK on this machine, spdk_nvme_perf against nvmf_tgt, null namespace, one core each:"
echo " 1.11 M IOPS at 4 KiB QD128, 115 us average; 6.5 GB/s at 128 KiB QD32)"
