#!/usr/bin/env bash
# hugepage-setup against a real kernel: a QEMU guest with two emulated NVMe controllers behind
# an emulated IOMMU. Gives them back to the nvme driver, puts swap on one, and checks that
# config binds only the free one to vfio-pci, reserves hugepages, and reset restores both.
set -eu
ROOT=${XBDEV_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
SHARED=${XBDEV_SHARED:-$ROOT/../shared}
cd "$ROOT"
cargo build -q --release -p hugepage-setup
work=$(mktemp -d /tmp/hps.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp target/release/hugepage-setup "$work/"
cat > "$work/check.sh" <<'GUEST'
set -e
H=./hugepage-setup
fail() { echo "GUEST FAIL: $*"; exit 1; }
$H status
$H reset --keep-hugepages
sleep 2
[ -b /dev/nvme0n1 ] || { ls /dev; fail "nvme0n1 did not appear after reset"; }
mkswap /dev/nvme0n1 >/dev/null && swapon /dev/nvme0n1
$H status | tee st.txt
grep -q "is active swap" st.txt || fail "swap not reported"
$H config --hugepages 32 --no-mount | tee cfg.txt
grep -q "not touched: /dev/nvme0n1 is active swap" cfg.txt || fail "device with swap not refused"
grep -q -- "-> vfio-pci" cfg.txt || fail "free device not bound"
[ "$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages)" -ge 32 ] || fail "hugepages not reserved"
ls /dev/vfio
swapoff /dev/nvme0n1
$H reset | tee reset.txt
grep -q "vfio-pci -> nvme" reset.txt || fail "reset did not return the device to nvme"
[ "$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages)" = 0 ] || fail "hugepages not freed"
echo GUEST-OK
GUEST
out=$("$SHARED/testbed/vm-run.sh" -k no_timer_check -b vfio -N 2 -S 64 -t 300 -f "$work/hugepage-setup" -f "$work/check.sh" sh check.sh 2>&1) || true
echo "$out" | tail -40
echo "$out" | grep -q GUEST-OK
