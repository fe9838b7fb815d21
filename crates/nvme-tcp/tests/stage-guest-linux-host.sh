#!/usr/bin/env bash
# Interop stage: the Linux kernel NVMe/TCP host (nvme-tcp, in a QEMU guest
# from ../shared/testbed) against our target (examples/nvmf-target.rs on the
# host, reached from the guest at 10.0.2.2). The guest connects a discovery
# controller and the NVM subsystem with header and data digests, writes
# 2 MiB with O_DIRECT, reads it back and compares.
#   XBDEV_ROOT    repository root (default: two levels up)
#   XBDEV_SHARED  directory holding testbed/ (default: $XBDEV_ROOT/../shared)
set -euo pipefail
ROOT=${XBDEV_ROOT:-$(cd "$(dirname "$0")/../../.." && pwd)}
SHARED=${XBDEV_SHARED:-$ROOT/../shared}
TB=$SHARED/testbed
PORT=${XB_TGT_PORT:-$((30000 + $$ % 20000))}
NQN=nqn.2024-01.io.xbdev:linux-host
cd "$ROOT"
cargo build -q --release -p xbdev-nvme-tcp --example nvmf-target
TGT=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/nvmf-target
"$TGT" "127.0.0.1:$PORT" "$NQN" 1 64 &
TPID=$!
trap 'kill $TPID 2>/dev/null || true' EXIT
sleep 1
WORK=$(mktemp -d)
trap 'kill $TPID 2>/dev/null || true; rm -rf "$WORK"' EXIT
cat > "$WORK/guest.sh" <<GUEST
set -x
modprobe nvme-tcp || modprobe nvme_tcp
echo "transport=tcp,traddr=10.0.2.2,trsvcid=$PORT,nqn=nqn.2014-08.org.nvmexpress.discovery" > /dev/nvme-fabrics || { dmesg | tail -15; exit 1; }
echo "transport=tcp,traddr=10.0.2.2,trsvcid=$PORT,nqn=$NQN,hdr_digest,data_digest" > /dev/nvme-fabrics || { dmesg | tail -15; exit 1; }
sleep 2
dev=\$(ls /dev/nvme*n1 | head -1)
[ -b "\$dev" ] || { dmesg | tail -15; exit 1; }
cat /sys/class/nvme/nvme*/subsysnqn
dd if=/dev/urandom of=/tmp/a bs=4096 count=512
dd if=/tmp/a of=\$dev bs=65536 oflag=direct || { dmesg | tail -15; exit 1; }
echo 3 > /proc/sys/vm/drop_caches
dd if=\$dev of=/tmp/b bs=1048576 count=2 iflag=direct || { dmesg | tail -15; exit 1; }
cmp /tmp/a /tmp/b && echo INTEROP-DATA-OK
GUEST
out=$(bash "$TB/vm-run.sh" -t 500 -f "$WORK/guest.sh" sh guest.sh 2>&1) || true
echo "$out" | tail -25
echo "$out" | grep -q INTEROP-DATA-OK
