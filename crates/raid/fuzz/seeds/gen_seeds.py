#!/usr/bin/env python3
"""Writes the seed inputs of the raid fuzz targets into seeds/<target>/:
the real mdadm superblocks of ../src/superblock/testdata (with the input
prefix the target expects) and mdadm-style bitmap headers."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.join(HERE, "..", "..", "src", "superblock", "testdata")
DEV_SECTORS = 32 * 2048  # the 32 MiB members the testdata came from


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


for fname in sorted(os.listdir(TESTDATA)):
    sb = open(os.path.join(TESTDATA, fname), "rb").read()
    base = fname.rsplit(".", 1)[0]
    dev = struct.pack("<Q", DEV_SECTORS)
    # As read: checksum as stored, read at sector 8.
    write("superblock_parse", base, bytes([0]) + dev + sb)
    # Also plan an assembly from it.
    write("superblock_parse", base + "_plan", bytes([4]) + dev + sb)
    # With an internal bitmap 8 sectors after the superblock (checksum
    # fixed up by the target, flag bit 0).
    b = bytearray(sb)
    struct.pack_into("<I", b, 8, struct.unpack_from("<I", b, 8)[0] | 1)
    struct.pack_into("<i", b, 96, 8)
    write("superblock_parse", base + "_bitmap", bytes([5]) + dev + bytes(b))

# bitmap_parse: flag byte, sector, count, then header and bits.
uuid = bytes.fromhex("67d71b4ef88d419c4ee6e811c46d2460")
for name, version, chunk, sync, bits in [
    ("v4_64k", 4, 64 << 10, 61440, bytes([0x05, 0x80])),
    ("v4_512", 4, 512, 1000, bytes([0xFF] * 125)),
    ("v3_1m", 3, 1 << 20, 1 << 30, bytes([0x01])),
]:
    hdr = bytearray(256)
    struct.pack_into("<II", hdr, 0, 0x6D746962, version)
    hdr[8:24] = uuid
    struct.pack_into("<QQQIIIIII", hdr, 24, 100, 90, sync, 0, chunk, 5, 0, 0, 0)
    write("bitmap_parse", name, bytes([0]) + struct.pack("<QQ", 1000, 64) + bytes(hdr) + bits)
