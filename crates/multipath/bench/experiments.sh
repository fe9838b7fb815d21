#!/usr/bin/env bash
# The seed design's experiments (multipath-design.md section 4) over real NVMe/TCP: four paths
# to one namespace served by xbdev's own NVMe/TCP target, each path's bandwidth limited with tc.
#
#   crates/multipath/bench/experiments.sh [SECONDS-PER-POLICY]      (default 10; run as root)
#
# Network: a network namespace made here holds the target (examples/nvmf-target of
# crates/nvme-tcp, one malloc namespace) listening on four veth pairs, 10.231.<i>.2 inside the
# namespace and 10.231.<i>.1 on this side; nothing leaves this machine. Each path's traffic,
# both directions, goes through an ifb device with a tbf qdisc: one token bucket of R MB/s per
# path, counting every byte on the wire (headers included; veth MTU 9000, jumbo frames as on
# storage networks). Everything made here is removed on exit.
#
# Load: crates/multipath/examples/mpbench (one reactor-like loop) keeps QD IOs of BS bytes in
# flight, READ_PCT% random reads, the rest random writes, like the seed's
# `fio -rw=randrw -iodepth=128`; policies switch at run time (MultipathBdev::set_policy), each
# measured for SECONDS after WARMUP seconds that let the previous policy's queues drain.
#
#   1. aggregation: four 10 MB/s paths, every policy, against one path alone;
#   2. load balancing: paths of 1, 1, 100 and 100 MB/s, every policy, per-path bandwidth
#      (weighted: weights 1, 1, 100, 100);
#   3. failover and failback: four 10 MB/s paths, queue_length; path 1 is cut (link down and
#      its connections reset, like the seed removing the listener) for 10 s mid-run, then
#      restored. One-second samples to failover.csv, plotted to failover.png.
#
#   0. (first) the ceiling: four paths without limits, queue_length: what the machine's CPUs
#      move through the whole stack (initiator, TCP, target); the limits above are only
#      meaningful below it.
#
# Environment: BS (64k), QD (128), READ_PCT (50), WARMUP (3), OUT (target/multipath-experiments),
# ONLY (experiments to run, default "0 1 2 3"), SCALE (factor on every link rate, default 1: with
# SCALE=0.25 the links are 2.5 and 0.25/25 MB/s, for machines whose ceiling is below 202 MB/s). Every run's CSV (one row per second, per-path MB/s
# and state), its printed samples (*.txt) and the library's log (mpbench.log) land in OUT.
# ONLY=custom runs one case instead: RATES (MB/s per path, default "1 1 100 100") and POLICY
# (comma-separated names, default queue_length), printing every sample and the tc drop counters.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
T=${1:-10}
BS=${BS:-64k}
QD=${QD:-128}
READ_PCT=${READ_PCT:-50}
WARMUP=${WARMUP:-3}
OUT=${OUT:-$ROOT/target/multipath-experiments}
ONLY=${ONLY:-0 1 2 3}
SCALE=${SCALE:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
NET=10.231
NQN=nqn.2024-01.io.xbdev:multipath-experiments
P=xm$(($$ % 100000))      # interface name prefix (short: names are at most 15 characters)
NS=$P-ns

[ "$(id -u)" = 0 ] || { echo "experiments.sh: needs root (network namespace, tc)" >&2; exit 1; }
for c in ip tc ss; do command -v $c >/dev/null || { echo "experiments.sh: needs $c (iproute2)" >&2; exit 1; }; done
if ! command -v gnuplot >/dev/null; then
    echo "installing gnuplot-nox for the plots"
    apt-get install -y -qq gnuplot-nox >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq gnuplot-nox >/dev/null; }
fi
mkdir -p "$OUT"

cd "$ROOT"
echo "building the target and the load generator (release)"
cargo build --release -q -p xbdev-nvme-tcp --example nvmf-target
cargo build --release -q -p xbdev-multipath --example mpbench
TGT=$TARGET_DIR/release/examples/nvmf-target
MPB=$TARGET_DIR/release/examples/mpbench

tpid=
cleanup() {
    if [ -n "$tpid" ]; then kill "$tpid" 2>/dev/null || true; wait "$tpid" 2>/dev/null || true; fi
    for i in 0 1 2 3; do
        ip link del "${P}h$i" 2>/dev/null || true
        ip link del "${P}b$i" 2>/dev/null || true
    done
    ip netns del "$NS" 2>/dev/null || true
    ip route del unreachable "$NET.0.0/16" 2>/dev/null || true
}
trap cleanup EXIT

# --- network: four veth pairs into the target's namespace, an ifb + tbf per path ---
# Nothing for these addresses ever takes the default route: with a path's link down (its /24
# route gone), connects fail at once instead of leaving the machine.
ip route add unreachable "$NET.0.0/16"
ip netns add "$NS"
ip -n "$NS" link set lo up
for i in 0 1 2 3; do
    ip link add "${P}h$i" mtu 9000 type veth peer name "${P}t$i" mtu 9000
    ip link set "${P}t$i" netns "$NS"
    ip addr add "$NET.$i.1/24" dev "${P}h$i"
    ip -n "$NS" addr add "$NET.$i.2/24" dev "${P}t$i"
    ip link set "${P}h$i" up
    ip -n "$NS" link set "${P}t$i" up
    # Both directions of the path through one ifb device: one token bucket per path.
    ip link add "${P}b$i" type ifb
    ip link set "${P}b$i" up
    tc qdisc add dev "${P}h$i" clsact
    for dir in ingress egress; do
        tc filter add dev "${P}h$i" $dir protocol all prio 1 u32 match u32 0 0 \
            action mirred egress redirect dev "${P}b$i"
    done
done

# rate PATH MB/s: one token bucket of that many 10^6 bytes per second for the path. Its queue
# holds every byte the load can have outstanding (QD IOs of BS bytes, plus headers), so the
# link delays but never drops: TCP loss recovery would otherwise dominate the slow links.
BS_BYTES=$(echo "$BS" | awk '/[kK]$/ { print $0 * 1024; next } { print $0 + 0 }')
rate() {
    local kbit burst limit
    kbit=$(awk -v m="$2" 'BEGIN { printf "%d", m * 8000 }')
    burst=$(awk -v m="$2" 'BEGIN { b = m * 1e6 * 0.005; if (b < 32768) b = 32768; printf "%d", b }')
    limit=$(awk -v q="$QD" -v b="$BS_BYTES" 'BEGIN { printf "%d", q * b * 1.25 + 1048576 }')
    tc qdisc replace dev "${P}b$1" root tbf rate "${kbit}kbit" burst "$burst" limit "$limit"
}
mbs() { awk -v m="$1" -v s="$SCALE" 'BEGIN { printf "%g", m * s }'; }   # a link rate, scaled
rates() { local i=0; for r in "$@"; do rate $i "$(mbs "$r")"; i=$((i + 1)); done; }

# --- the target: xbdev's NVMe/TCP target inside the namespace, one 256 MiB malloc namespace ---
ip netns exec "$NS" "$TGT" "$NET.0.2:4420,$NET.1.2:4420,$NET.2.2:4420,$NET.3.2:4420" "$NQN" 1 256 > "$OUT/target.log" 2>&1 &
tpid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/$NET.3.2/4420") 2>/dev/null && break
    sleep 0.1
done
TARGETS="$NET.0.2:4420,$NET.1.2:4420,$NET.2.2:4420,$NET.3.2:4420"
POLICIES="round_robin random weighted hash service_time average_rate queue_length historical_service_time"
mpb() { "$MPB" --nqn "$NQN" --bs "$BS" --qd "$QD" --read-pct "$READ_PCT" --size-mb 256 "$@" 2>>"$OUT/mpbench.log"; }
want() { case " $ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
# field POLICY N: field N of the RESULT line of POLICY (4 MB/s, 6 IOPS, 9 errors, 11 mismatches, 13.. paths)
field() { awk -v p="$1" -v f="$2" '$1 == "RESULT" && $3 == p { print $f }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", 100 * a / b; else print "n/a" }'; }
echo "BS=$BS QD=$QD reads=$READ_PCT% ${T}s per policy after ${WARMUP}s warmup; link rates x $SCALE; output in $OUT"
: > "$OUT/mpbench.log"
errors=0 rc=0

if want 0; then
echo
echo "## 0. ceiling: four paths without bandwidth limits, queue_length"
tc_off() { for i in 0 1 2 3; do tc qdisc del dev "${P}b$i" root 2>/dev/null || true; done; }
tc_off
mpb --targets "$TARGETS" --policies queue_length --time "$T" --warmup "$WARMUP" --label ceiling > "$OUT/ceiling.txt" \
    || echo "(mpbench reported IO errors)"
echo "$(field queue_length 4 < "$OUT/ceiling.txt") MB/s ($(field queue_length 6 < "$OUT/ceiling.txt") IOPS) through four unlimited paths"
fi

drops() { for i in 0 1 2 3; do printf 'path %d: %s\n' $i "$(tc -s qdisc show dev "${P}b$i" | grep -o 'Sent.*')"; done; }

if want custom; then
echo
echo "## custom: paths of ${RATES:=1 1 100 100} MB/s, ${POLICY:=queue_length}"
read -r -a R <<< "$RATES"
rates "${R[@]}"
mpb --targets "$TARGETS" --policies "$POLICY" --time "$T" --warmup "$WARMUP" --label custom \
    --weights "$(echo "$RATES" | tr ' ' ',')" --csv "$OUT/custom.csv" || rc=$?
drops
fi

# --- 1. aggregation ---
if want 1; then
echo
echo "## 1. aggregation: four paths of $(mbs 10) MB/s each, against one path"
rates 10 10 10 10
mpb --targets "$NET.0.2:4420" --direct --time "$T" --warmup "$WARMUP" --label one-path > "$OUT/aggregation-one.txt" || echo "(mpbench reported IO errors)"
mpb --targets "$TARGETS" --policies all --time "$T" --warmup "$WARMUP" --label four-paths \
    --csv "$OUT/aggregation.csv" > "$OUT/aggregation-four.txt" || echo "(mpbench reported IO errors)"
one=$(field direct 4 < "$OUT/aggregation-one.txt")
printf '%-34s %9s %9s %7s\n' "" "MB/s" "x 1 path" "errors"
printf '%-34s %9s %9s %7s\n' "one path (the nvmf bdev itself)" "$one" "1.00" "$(field direct 9 < "$OUT/aggregation-one.txt")"
for pol in $POLICIES; do
    m=$(field $pol 4 < "$OUT/aggregation-four.txt")
    printf '%-34s %9s %9s %7s\n' "4 paths, $pol" "$m" "$(awk -v a="$m" -v b="$one" 'BEGIN { printf "%.2f", a / b }')" \
        "$(field $pol 9 < "$OUT/aggregation-four.txt")"
done
fi

# --- 2. load balancing over unequal paths ---
if want 2; then
echo
AVAIL=$(mbs 202)
echo "## 2. load balancing: paths of $(mbs 1), $(mbs 1), $(mbs 100) and $(mbs 100) MB/s ($AVAIL MB/s available)"
rates 1 1 100 100
mpb --targets "$TARGETS" --policies all --weights 1,1,100,100 --time "$T" --warmup "$((WARMUP + 1))" \
    --label balance --csv "$OUT/balance.csv" > "$OUT/balance.txt" || echo "(mpbench reported IO errors)"
printf '%-24s %9s %12s %7s   %s\n' "policy" "MB/s" "of $AVAIL MB/s" "errors" "MB/s per path"
for pol in $POLICIES; do
    m=$(field $pol 4 < "$OUT/balance.txt")
    printf '%-24s %9s %11s%% %7s   %s\n' "$pol" "$m" "$(pct "$m" "$AVAIL")" "$(field $pol 9 < "$OUT/balance.txt")" \
        "$(awk -v p=$pol '$1 == "RESULT" && $3 == p { for (i = 13; i <= NF; i++) printf "%8s", $i }' "$OUT/balance.txt")"
done
fi

# --- 3. failover and failback ---
if want 3; then
echo
echo "## 3. failover and failback: four $(mbs 10) MB/s paths, queue_length, path 1 cut from 10 s to 20 s"
rates 10 10 10 10
CUT="ip link set dev ${P}h1 down && ss -K dst $NET.1.2 >/dev/null 2>&1"
RESTORE="ip link set dev ${P}h1 up"
mpb --targets "$TARGETS" --policies queue_length --time 40 --warmup 0 --label failover \
    --csv "$OUT/failover.csv" --at "10:$CUT" --at "20:$RESTORE" > "$OUT/failover.txt" || rc=$?
grep -E '^t=|@' "$OUT/failover.txt"
errors=$(awk '$1 == "TOTAL" { print $6 }' "$OUT/failover.txt")
echo "IO errors seen by the caller: $errors (goal: 0); mpbench exit status $rc"
fi

# --- plots ---
plot() { # csv, png, title, extra gnuplot commands
    gnuplot <<EOF
set terminal pngcairo noenhanced size 1100,560 font "DejaVu Sans,11"
set output "$2"
set datafile separator ","
set title "$3"
set xlabel "time (s)"
set ylabel "MB/s (1-second samples)"
set grid
set key outside right top
set yrange [0:*]
$4
plot "$1" every ::1 using 3:4 with linespoints lw 2 pt 7 ps 0.5 title "multipath total", \
     "" every ::1 using 3:7 with lines lw 1.5 title "path 0", \
     "" every ::1 using 3:9 with lines lw 1.5 title "path 1", \
     "" every ::1 using 3:11 with lines lw 1.5 title "path 2", \
     "" every ::1 using 3:13 with lines lw 1.5 title "path 3"
EOF
}
want 3 && plot "$OUT/failover.csv" "$OUT/failover.png" \
    "Failover and failback over NVMe/TCP: 4 paths x $(mbs 10) MB/s, queue_length, $BS random IO, QD $QD" \
    "set arrow from 10, graph 0 to 10, graph 1 nohead dt 2 lc rgb 'red'
set arrow from 20, graph 0 to 20, graph 1 nohead dt 2 lc rgb 'dark-green'
set label 'path 1 cut' at 10.3, graph 0.96 tc rgb 'red'
set label 'path 1 restored' at 20.3, graph 0.96 tc rgb 'dark-green'"
# Policy switches in the load-balancing run, as labels along the time axis.
want 2 && marks=$(awk -F, 'NR > 1 && $1 !~ /^#/ && $2 != last { printf "set arrow from %s, graph 0 to %s, graph 1 nohead dt 3 lc rgb \"gray\"\nset label \"%s\" at %s, graph 0.98 rotate by -90 font \",9\"\n", $3 - 1, $3 - 1, $2, $3 - 0.7; last = $2 }' "$OUT/balance.csv")
want 2 && plot "$OUT/balance.csv" "$OUT/balance.png" \
    "Load balancing over paths of $(mbs 1), $(mbs 1), $(mbs 100), $(mbs 100) MB/s: each policy in turn (switched at run time)" "$marks"
echo
echo "plots: $OUT/*.png; data: $OUT/*.csv $OUT/*.txt; log: $OUT/mpbench.log"
[ "$errors" = 0 ] && [ $rc = 0 ]
