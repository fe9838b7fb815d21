#!/usr/bin/env bash
# SPDK's bdevperf against xbdev's raid_bench, interleaved in one run (issue 6's workloads).
#
#   SPDK_DIR=/path/to/built/spdk benches/spdk-compare/raid.sh
#
# SPDK_DIR must hold an SPDK tree already built with raid5f (see README.md next to this script);
# this script neither fetches nor builds SPDK. It builds xbdev's raid_bench example (niced) unless
# NO_BUILD=1, writes bdevperf's JSON configs to a scratch directory, then for each workload runs
# SPDK, ours, SPDK, ours, ... ROUNDS times, each run pinned to the same core, at high priority and
# under the shared benchmark lock, and prints one table: best and median of each side and the ratio
# ours/SPDK of the medians.
#
# Environment (defaults in brackets):
#   SPDK_DIR     built SPDK tree (required)
#   ROUNDS       rounds per workload [3]
#   SECS         seconds per run [5]
#   MEMBER_MIB   size of each malloc member (and of the plain malloc bdev) in MiB [32]
#   QD           queue depth [32]
#   CPU          core both stacks run on [1]
#   SPDK_MEM     huge: DPDK hugepages (a hugetlbfs mount and free 2 MiB pages needed) | nohuge:
#                `--no-huge -s SPDK_MEM_MIB` (anonymous 4 KiB pages) [huge]
#   SPDK_MEM_MIB DPDK memory with SPDK_MEM=nohuge, MiB [2048]
#   SPDK_ARGS    extra bdevperf arguments, e.g. `-H` (data buffers off hugepages) or `-Z` []
#   ONLY         extended regex: run only workloads whose name matches []
#   LOCK         benchmark lock file shared with other benchmarks, empty for none
#                [/work/bench.lock when /work exists, else none]
#   NO_BUILD     1: do not build raid_bench [0]
#   RAID_BENCH   raid_bench binary [$CARGO_TARGET_DIR or target/release/examples/raid_bench]
#   KEEP         1: keep the scratch directory (configs and every run's output) [0]
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
: "${SPDK_DIR:?set SPDK_DIR to a built SPDK tree}"
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
MEMBER_MIB=${MEMBER_MIB:-32}
QD=${QD:-32}
CPU=${CPU:-1}
SPDK_MEM=${SPDK_MEM:-huge}
SPDK_MEM_MIB=${SPDK_MEM_MIB:-2048}
SPDK_ARGS=${SPDK_ARGS:-}
ONLY=${ONLY:-}
if [[ -d /work ]]; then
  LOCK=${LOCK-/work/bench.lock}
else
  LOCK=${LOCK-}
fi
NO_BUILD=${NO_BUILD:-0}
KEEP=${KEEP:-0}
target_dir=${CARGO_TARGET_DIR:-$repo/target}
RAID_BENCH=${RAID_BENCH:-$target_dir/release/examples/raid_bench}

bdevperf=$SPDK_DIR/build/examples/bdevperf
if [[ ! -x $bdevperf ]]; then
  echo "no bdevperf at $bdevperf: build SPDK first (see benches/spdk-compare/README.md)" >&2
  exit 1
fi

mem_args=()
case $SPDK_MEM in
  huge)
    if ! grep -q ' hugetlbfs ' /proc/mounts; then
      echo "SPDK_MEM=huge needs a hugetlbfs mount (mount -t hugetlbfs nodev DIR) or use SPDK_MEM=nohuge" >&2
      exit 1
    fi
    free=$(awk '/^HugePages_Free:/ { print $2 }' /proc/meminfo)
    if ((free * 2 < MEMBER_MIB * 4 + 512)); then
      echo "SPDK_MEM=huge: only $free free 2 MiB hugepages (echo N > /proc/sys/vm/nr_hugepages)" >&2
      exit 1
    fi
    ;;
  nohuge) mem_args=(--no-huge -s "$SPDK_MEM_MIB") ;;
  *)
    echo "SPDK_MEM must be huge or nohuge, not $SPDK_MEM" >&2
    exit 1
    ;;
esac

if [[ $NO_BUILD != 1 ]]; then
  (cd "$repo" && CARGO_TARGET_DIR=$target_dir nice -n 19 cargo build -q --release -p xbdev-raid --example raid_bench)
fi
if [[ ! -x $RAID_BENCH ]]; then
  echo "no raid_bench at $RAID_BENCH" >&2
  exit 1
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/spdk-compare.XXXXXX")
if [[ $KEEP == 1 ]]; then
  echo "scratch: $scratch" >&2
else
  trap 'rm -rf "$scratch"' EXIT
fi

# bdevperf JSON config: `members` malloc bdevs of MEMBER_MIB with 512 B blocks, and over them a
# raid bdev of `level` (none for a plain malloc bdev) with a 64 KiB strip (raid0, raid5f).
write_config() {
  local file=$1 level=$2 members=$3 i sep="" names=""
  {
    printf '{"subsystems":[{"subsystem":"bdev","config":[\n'
    for ((i = 0; i < members; i++)); do
      printf '{"method":"bdev_malloc_create","params":{"name":"Malloc%d","num_blocks":%d,"block_size":512}},\n' \
        "$i" $((MEMBER_MIB * 2048))
      names+="$sep\"Malloc$i\""
      sep=","
    done
    if [[ $level != none ]]; then
      local strip=',"strip_size_kb":64'
      [[ $level == raid1 ]] && strip=""
      printf '{"method":"bdev_raid_create","params":{"name":"%s","raid_level":"%s"%s,"base_bdevs":[%s]}},\n' \
        "$level" "$level" "$strip" "$names"
    fi
    printf '{"method":"bdev_wait_for_examine"}\n]}]}\n'
  } >"$file"
}
write_config "$scratch/malloc.json" none 1
write_config "$scratch/raid0.json" raid0 4
write_config "$scratch/raid1.json" raid1 2
write_config "$scratch/raid5f.json" raid5f 4

# name | SPDK config | SPDK bdev | IO size | bdevperf -w | raid_bench filter
workloads=(
  "malloc 4K randwrite|malloc|Malloc0|4096|randwrite|malloc 4K randwrite"
  "malloc 128K write|malloc|Malloc0|131072|write|malloc 128K seqwrite"
  "raid0x4 4K randwrite|raid0|raid0|4096|randwrite|raid0 x4 4K randwrite"
  "raid0x4 128K write|raid0|raid0|131072|write|raid0 x4 128K seqwrite"
  "raid1x2 4K randwrite|raid1|raid1|4096|randwrite|raid1 x2 4K randwrite"
  "raid1x2 128K write|raid1|raid1|131072|write|raid1 x2 128K seqwrite"
  "raid5x4 192K write|raid5f|raid5f|196608|write|raid5 x4 192K seqwrite"
)

locked() {
  if [[ -n $LOCK ]]; then
    flock "$LOCK" nice -n -20 taskset -c "$CPU" "$@"
  else
    nice -n -20 taskset -c "$CPU" "$@"
  fi
}

# One bdevperf run; prints the figure (M IOPS for 4 KiB, GB/s otherwise).
spdk_run() {
  local cfg=$1 bdev=$2 size=$3 rw=$4 log=$5 iops
  local args=(-m "$(printf '0x%x' $((1 << CPU)))" -c "$scratch/$cfg.json" -q "$QD" -o "$size" -w "$rw" -t "$SECS")
  # shellcheck disable=SC2206 # SPDK_ARGS is a list of words on purpose.
  args+=("${mem_args[@]}" $SPDK_ARGS)
  locked timeout $((SECS + 120)) "$bdevperf" "${args[@]}" >"$log" 2>&1 || {
    echo "bdevperf failed, see $log:" >&2
    tail -5 "$log" >&2
    return 1
  }
  iops=$(awk -v b="$bdev" '$1 == b && $2 == ":" { print $4; exit }' "$log")
  [[ -n $iops ]] || {
    echo "no result for $bdev in $log" >&2
    return 1
  }
  figure "$iops" "$size"
}

# One raid_bench run; prints the figure and the memcpy GB/s of the same pattern.
ours_run() {
  local filter=$1 size=$2 log=$3 wl row
  wl=${filter#* }
  wl=${wl#x[0-9] }
  locked env MEMBER_MIB="$MEMBER_MIB" QD="$QD" timeout $((SECS * 2 + 120)) "$RAID_BENCH" "$SECS" "$filter" >"$log" 2>&1 || {
    echo "raid_bench failed, see $log:" >&2
    tail -5 "$log" >&2
    return 1
  }
  row=$(grep -F -- " $wl " "$log" | tail -1 | sed -E "s/.* $wl +([0-9.]+) +([0-9.]+) +([0-9.]+).*/\1 \2 \3/")
  [[ $row =~ ^[0-9.]+\ [0-9.]+\ [0-9.]+$ ]] || {
    echo "no result for '$filter' in $log" >&2
    return 1
  }
  read -r miops gbs mc <<<"$row"
  if ((size == 4096)); then echo "$miops $mc"; else echo "$gbs $mc"; fi
}

figure() {
  awk -v iops="$1" -v size="$2" 'BEGIN { if (size == 4096) printf "%.3f\n", iops / 1e6; else printf "%.2f\n", iops * size / 1e9 }'
}

# best and median of the arguments: "best median"
stats() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%s %s\n", v[NR], m }'
}

echo "SPDK $(git -C "$SPDK_DIR" rev-parse --short HEAD 2>/dev/null || echo "(not a git tree)"), xbdev $(git -C "$repo" rev-parse --short HEAD)," \
  "$(date -u '+%Y-%m-%d %H:%M UTC'); malloc members $MEMBER_MIB MiB, 512 B blocks, QD $QD, core $CPU," \
  "$SECS s x $ROUNDS rounds, SPDK memory $SPDK_MEM${SPDK_ARGS:+, bdevperf $SPDK_ARGS}"
table=()
for w in "${workloads[@]}"; do
  IFS='|' read -r name cfg bdev size rw filter <<<"$w"
  if [[ -n $ONLY && ! $name =~ $ONLY ]]; then
    continue
  fi
  spdk=() ours=() mcs=()
  for ((r = 1; r <= ROUNDS; r++)); do
    tag=${name// /_}.$r
    s=$(spdk_run "$cfg" "$bdev" "$size" "$rw" "$scratch/spdk.$tag.log")
    out=$(ours_run "$filter" "$size" "$scratch/ours.$tag.log")
    read -r o mc <<<"$out"
    echo "  $name round $r: SPDK $s, ours $o" >&2
    spdk+=("$s") ours+=("$o") mcs+=("$mc")
  done
  read -r sb sm < <(stats "${spdk[@]}")
  read -r ob om < <(stats "${ours[@]}")
  read -r _ mm < <(stats "${mcs[@]}")
  unit="GB/s"
  ((size == 4096)) && unit="M IOPS"
  table+=("$(awk -v n="$name" -v u="$unit" -v sb="$sb" -v sm="$sm" -v ob="$ob" -v om="$om" -v mm="$mm" \
    'BEGIN { printf "%-21s %-6s %7s %7s  %7s %7s  %6.2fx  %6.2f\n", n, u, sb, sm, ob, om, om / sm, mm }')")
done
printf '%-21s %-6s %7s %7s  %7s %7s  %7s  %6s\n' workload unit "SPDK" "" "ours" "" "ours/" "memcpy"
printf '%-21s %-6s %7s %7s  %7s %7s  %7s  %6s\n' "" "" best median best median SPDK GB/s
printf '%s\n' "${table[@]}"
