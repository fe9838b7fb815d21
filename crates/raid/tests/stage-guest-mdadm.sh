#!/usr/bin/env bash
# The md on-disk format against Linux md and mdadm in QEMU guests, both directions, for RAID0, 1
# (with bitmap), 5 (left-symmetric, bitmap), 6 and 10 (near 2): arrays created by mdadm are
# assembled and read here (also degraded); arrays written through the RAID bdev are assembled by
# mdadm and checked with `mdadm --detail`/`--examine` and md's own parity check; an array left
# dirty with a write-intent bitmap is resynced by md from exactly the bits it recorded; a replace
# stopped midway and a bitmap re-add stopped before recovering are finished by md.
# XBDEV_MD_INTEROP=full runs all 41 cases (every layout; about 30 minutes under emulation).
set -eu
ROOT=${XBDEV_ROOT:-$(cd "$(dirname "$0")/../../.." && pwd)}
SHARED=${XBDEV_SHARED:-$ROOT/../shared}
cd "$ROOT"
export XBDEV_VM_RUN=${XBDEV_VM_RUN:-$SHARED/testbed/vm-run.sh}
if [ "${XBDEV_MD_INTEROP:-}" = full ]; then
    cargo test -q --release -p xbdev-raid --test md_interop -- --ignored --test-threads=1
else
    cargo test -q --release -p xbdev-raid --test md_interop -- --ignored --test-threads=1 --exact \
        md_to_xbdev_raid0 bdev_to_md_raid0 \
        md_to_xbdev_raid1_bitmap bdev_to_md_raid1_bitmap \
        md_to_xbdev_raid5_left_symmetric_bitmap bdev_to_md_raid5_left_symmetric_bitmap \
        md_to_xbdev_raid6_left_symmetric bdev_to_md_raid6_left_symmetric \
        md_to_xbdev_raid10_near2 bdev_to_md_raid10_near2 \
        bdev_to_md_raid5_dirty_bitmap bdev_to_md_raid1_replace_resumed \
        bdev_to_md_raid5_bitmap_readd_handover
fi
