#!/usr/bin/env bash
# The md on-disk format against Linux md and mdadm in QEMU guests: arrays created by mdadm are
# assembled and read here (also degraded), arrays created here are assembled by mdadm, checked
# with `mdadm --detail`/`--examine` and md's own parity check.
set -eu
ROOT=${XBDEV_ROOT:-$(cd "$(dirname "$0")/../../.." && pwd)}
SHARED=${XBDEV_SHARED:-$ROOT/../shared}
cd "$ROOT"
export XBDEV_VM_RUN=${XBDEV_VM_RUN:-$SHARED/testbed/vm-run.sh}
cargo test -q --release -p xbdev-raid --test md_interop -- --ignored --test-threads=1
