#!/usr/bin/env bash
# A/B comparison of NVMe/TCP loopback builds (issue 4): runs one workload
# over xbdev-perf (initiator) against examples/nvmf-target (null namespace)
# for each of several binary pairs, interleaved, RUNS times, so a slow
# period of the host hits every variant alike. Nothing is built here.
#
#   crates/nvme-tcp/bench/ab.sh SECONDS RUNS WORKLOAD SIZE QD LABEL=TGT_DIR,INI_DIR[,VAR=VALUE...] ...
#
# TGT_DIR holds examples/nvmf-target, INI_DIR holds xbdev-perf (a cargo
# release directory or a copy of one); VAR=VALUE pairs are set in the
# environment of both processes of that variant. Example, old against new, and the
# new initiator against the old target:
#   B=/work/target-x/release
#   crates/nvme-tcp/bench/ab.sh 3 5 randread 4k 128 old=/tmp/base,/tmp/base \
#       new=$B,$B newini=/tmp/base,$B
#
# Environment: INI_CORE, TGT_CORE, NICE, TCP_CC, INCAPSULE as in
# loopback.sh. Prints each run (IOPS, average latency, initiator ns per
# IO, target CPU ns per IO) and, per variant, the median and best IOPS and
# their ratio to the first variant's.
set -euo pipefail
T=${1:?seconds}
RUNS=${2:?runs}
W=${3:?workload}
SZ=${4:?size}
QD=${5:?queue depth}
shift 5
[ $# -ge 1 ] || { echo "no LABEL=TGT_DIR,INI_DIR given" >&2; exit 2; }
INI_CORE=${INI_CORE:-0}
TGT_CORE=${TGT_CORE:-1}
NICE=${NICE:-0}
TCP_CC=${TCP_CC:-reno}
INCAPSULE=${INCAPSULE:-131072}
NQN=nqn.2024-01.io.xbdev:ab-bench
. "$(cd "$(dirname "$0")" && pwd)/common.sh"

# one LABEL TGT_DIR INI_DIR PORT [VAR=VALUE...] -> "iops avg_us tgt_ns_per_io"
one() {
  local tgt=$2 ini=$3 port=$4 c0 c1 out
  shift 4
  local -a envs=("$@")
  write_nvmf_json "$port"
  start_target "$tgt/examples/nvmf-target" "$port" "${envs[@]}" || { echo "0 0 0"; return; }
  c0=$(target_cpu_ns)
  out=$(setsid -w env "${envs[@]}" "$tmp/niced" "$ini/xbdev-perf" -c "$tmp/nvmf.json" -b nvmf0n1 -w "$W" -o "$SZ" -q "$QD" -t "$T" --json \
    2>"$tmp/perf.err" < /dev/null) || { cat "$tmp/perf.err" >&2; out=; }
  c1=$(target_cpu_ns)
  kill "$TPID" 2>/dev/null || true
  wait "$TPID" 2>/dev/null || true
  TPID=
  [ -n "$out" ] || { echo "0 0 0"; return; }
  python3 -c '
import json, sys
d = json.loads(sys.argv[1])["devices"][0]
iops = d["iops"]
print("%.0f %.1f %.0f" % (iops, d["latency_us"]["avg"], (int(sys.argv[2]) - int(sys.argv[3])) / (iops * float(sys.argv[4])) if iops else 0))
' "$out" "$c1" "$c0" "$T"
}

echo "A/B $W $SZ QD$QD, ${T}s x $RUNS runs, initiator core $INI_CORE, target core $TGT_CORE, nice $NICE"
echo "load average before: $(cat /proc/loadavg)"
printf '%-10s %4s %10s %8s %8s %10s\n' variant run IOPS avg_us ns/IO tgt_ns/IO
res=$tmp/results
: > "$res"
port=$((20000 + $$ % 20000))
for i in $(seq "$RUNS"); do
  for spec in "$@"; do
    label=${spec%%=*}
    dirs=${spec#*=}
    IFS=, read -r -a parts <<< "$dirs"
    port=$((port + 1))
    read -r iops avg tns < <(one "$label" "${parts[@]:0:2}" "$port" "${parts[@]:2}")
    ns=$(python3 -c 'import sys; i=float(sys.argv[1]); print("%.0f" % (1e9/i if i else 0))' "$iops")
    printf '%-10s %4s %10s %8s %8s %10s\n' "$label" "$i" "$iops" "$avg" "$ns" "$tns"
    echo "$label $iops $tns" >> "$res"
  done
done
echo "load average after: $(cat /proc/loadavg)"
python3 - "$res" "$@" <<'EOF'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
labels = [s.split("=", 1)[0] for s in sys.argv[2:]]
base = None
for l in labels:
    v = [float(r[1]) for r in rows if r[0] == l]
    t = [float(r[2]) for r in rows if r[0] == l]
    med, best = statistics.median(v), max(v)
    if base is None:
        base = (med, best)
    print("%-10s median %10.0f (%.3fx)  best %10.0f (%.3fx)  tgt_ns/IO median %6.0f" % (
        l, med, med / base[0] if base[0] else 0, best, best / base[1] if base[1] else 0, statistics.median(t)))
EOF
