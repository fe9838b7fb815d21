#!/usr/bin/env bash
# Issue-2 benchmarks of the foundation, each printed with its anchor and ratio from the same run.
#   benches/run.sh [seconds-per-run]   (default 5)
# Needs fio for the aio comparison (installed with apt-get when running as root).
set -eu
cd "$(dirname "$0")/.."
T=${1:-5}
cargo build --release -q -p xbdev --bins --examples
P=./target/release/xbdev-perf
EX=./target/release/examples
tmp=$(mktemp -d /var/tmp/xbdev-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

iops() { grep '^Total' | awk '{print $3}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

echo "## 1. null bdev, 4 KiB randread, QD128, 1 core"
for c in null-nozero null; do
  for lat in "--no-latency" ""; do
    out=$($P -c benches/configs/$c.json -w randread -o 4k -q 128 -t "$T" $lat)
    echo "$c ${lat:-(latency histogram on)}: $(echo "$out" | iops) IOPS, $(echo "$out" | grep 'ns per IO' | awk '{print $NF}') ns/IO"
  done
done
echo "(anchor: SPDK bdevperf 24.4 M IOPS, 41 ns/IO on this machine; SPDK's null bdev does not zero reads)"

echo; echo "## 2. malloc bdev vs memcpy"
for w in randread randwrite; do
  out=$($P -w $w -o 4k -q 128 -t "$T")
  echo "malloc 4 KiB $w QD128: $(echo "$out" | iops) IOPS"
done
out=$($P -w write -o 128k -q 32 -t "$T")
mbs=$(echo "$out" | grep '^Total' | awk '{print $4}')
echo "malloc 128 KiB seq write QD32: $(awk -v m="$mbs" 'BEGIN{printf "%.2f", m*1048576/1e9}') GB/s"
$EX/memcpy_bw 4096 random
$EX/memcpy_bw 131072 seq
echo "(anchor: SPDK bdevperf 1.76 M / 3.28 M IOPS, 39.6 GB/s)"

echo; echo "## 3. aio bdev vs fio io_uring on the same 2 GiB file"
if ! command -v fio >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -qq fio >/dev/null 2>&1 || apt-get update -qq && apt-get install -y -qq fio >/dev/null
fi
f=$tmp/aio.img
fallocate -l 2G "$f" 2>/dev/null || truncate -s 2G "$f"
dd if=/dev/urandom of="$f" bs=1M count=2048 conv=notrunc status=none
for mode in direct buffered; do
  if [ $mode = direct ]; then d=1; b=false; else d=0; b=true; cat "$f" >/dev/null; fi
  printf '{"reactor": {"cores": [0], "idle": "poll"}, "base_devices": [{"method": "aio", "params": {"name": "aio0", "filename": "%s", "buffered": %s}}]}' "$f" $b > $tmp/aio.json
  for qd in 32 128; do
    if command -v fio >/dev/null; then
      fi=$(fio --name=r --filename="$f" --ioengine=io_uring --direct=$d --rw=randread --bs=4k --iodepth=$qd \
        --time_based --runtime="$T" --numjobs=1 --cpus_allowed=0 --output-format=json | \
        python3 -c 'import json,sys; print(int(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))')
    else
      fi=0
    fi
    xi=$($P -c $tmp/aio.json -w randread -o 4k -q $qd -t "$T" | iops)
    echo "$mode QD$qd: xbdev $xi IOPS, fio io_uring $fi IOPS, ratio xbdev/fio $(ratio "$xi" "$fi")"
  done
done

echo; echo "## 4. client API to a null bdev"
$EX/client_api_bench "$T"
