#!/usr/bin/env bash
# The NVMe PCIe driver against QEMU's emulated NVMe controllers in a guest: over VFIO behind
# an emulated Intel IOMMU (two controllers), over uio_pci_generic (no IOMMU), and the whole
# stack (xbdev-perf verify on the `nvme` config method) over VFIO.
set -eu
ROOT=${XBDEV_ROOT:-$(cd "$(dirname "$0")/../../.." && pwd)}
SHARED=${XBDEV_SHARED:-$ROOT/../shared}
cd "$ROOT"
cargo build -q --release -p xbdev-nvme-pcie --example vfio_nvme_test
cargo build -q --release -p xbdev --bin xbdev-perf
T=$ROOT/target/release
work=$(mktemp -d /tmp/nvme-stage.XXXXXX)
trap 'rm -rf "$work"' EXIT
rc=0

# no_timer_check: under software emulation on a busy host the guest kernel's IO-APIC timer
# check through the emulated IOMMU's interrupt remapping can fail and panic the boot.
echo "--- vfio mode, two controllers"
VFIO_NVME_COUNT=2 "$SHARED/testbed/vfio-guest.sh" -t 900 -k no_timer_check "$T/examples/vfio_nvme_test" > "$work/vfio.log" 2>&1 || rc=1
tail -5 "$work/vfio.log"
grep -Eq '^[0-9]+ passed, 0 failed' "$work/vfio.log" || { rc=1; echo "vfio mode FAILED"; tail -40 "$work/vfio.log"; }

echo "--- uio mode (no IOMMU)"
VFIO_MODE=uio "$SHARED/testbed/vfio-guest.sh" -t 900 "$T/examples/vfio_nvme_test" --mode uio > "$work/uio.log" 2>&1 || rc=1
tail -5 "$work/uio.log"
grep -Eq '^[0-9]+ passed, 0 failed' "$work/uio.log" || { rc=1; echo "uio mode FAILED"; tail -40 "$work/uio.log"; }

echo "--- xbdev-perf verify over the nvme config method"
cat > "$work/nvme.json" <<'JSON'
{"reactor": {"cores": [0], "pin": false, "idle": "adaptive"},
 "base_devices": [{"method": "nvme", "params": {"name": "nvme0", "pci_addr": "0000:00:03.0", "queue_depth": 64}}]}
JSON
"$SHARED/testbed/vfio-guest.sh" -t 900 -k no_timer_check -f "$work/nvme.json" "$T/xbdev-perf" -c nvme.json -b nvme0n1 -w verify -q 16 -o 16k -t 5 \
    > "$work/perf.log" 2>&1 || rc=1
tail -6 "$work/perf.log"
grep -q '^nvme0n1 ' "$work/perf.log" || { rc=1; echo "xbdev-perf over nvme FAILED"; tail -30 "$work/perf.log"; }
exit $rc
