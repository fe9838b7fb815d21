#!/usr/bin/env bash
# Interop stage: the nvme-tcp initiator and nvmf bdev against the Linux kernel
# NVMe/TCP target (nvmet-tcp) in a QEMU guest from ../shared/testbed.
# Starts the target with two listeners and two namespaces, runs the ignored
# tests of crates/nvme-tcp/tests/linux_target.rs, stops the target.
#   XBDEV_ROOT    repository root (default: two levels up)
#   XBDEV_SHARED  directory holding testbed/ (default: $XBDEV_ROOT/../shared)
set -euo pipefail
ROOT=${XBDEV_ROOT:-$(cd "$(dirname "$0")/../../.." && pwd)}
SHARED=${XBDEV_SHARED:-$ROOT/../shared}
TB=$SHARED/testbed
export NVMET_NAME=${NVMET_NAME:-xbdev-nvme-tcp-$$}
export NVMET_HOST_PORTS=${NVMET_HOST_PORTS:-"$((20000 + $$ % 20000)) $((20001 + $$ % 20000))"}
export NVMET_NAMESPACES=2 NVMET_SIZE_MB=${NVMET_SIZE_MB:-64}
cleanup() { bash "$TB/nvmet-target.sh" stop >/dev/null 2>&1 || true; }
trap cleanup EXIT
info=$(bash "$TB/nvmet-target.sh" start)
echo "$info"
eval "$(echo "$info" | grep -E '^NVMET_(ADDR|PORTS|NQN|NAMESPACES)=' | sed 's/^\(NVMET_[A-Z]*\)=\(.*\)$/export \1="\2"/')"
export NVMET_SCRIPT="$TB/nvmet-target.sh"
cd "$ROOT"
cargo test --release -p xbdev-nvme-tcp --test linux_target -- --ignored --test-threads 1
