#!/usr/bin/env python3
"""Writes the seed inputs of the nvme-spec fuzz targets (valid entries and
buffers, as a controller or host would see them) into seeds/<target>/."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def sqe(opcode, cid, nsid=0, cdw10=0, cdw11=0, cdw12=0, cdw13=0, cdw14=0, cdw15=0):
    return (struct.pack("<BBHI", opcode, 0, cid, nsid) + bytes(32)
            + struct.pack("<6I", cdw10, cdw11, cdw12, cdw13, cdw14, cdw15))


# command_parse: admin, NVM I/O and Fabrics entries.
cmds = {
    "identify_ctrl": sqe(0x06, 1, 0, 1),
    "identify_ns": sqe(0x06, 2, 1, 0),
    "get_log_smart": sqe(0x02, 3, 0xFFFFFFFF, 2 | (127 << 16)),
    "create_cq": sqe(0x05, 4, 0, 1 | (63 << 16), 3),
    "create_sq": sqe(0x01, 5, 0, 1 | (63 << 16), 1 | (1 << 16)),
    "set_features_nq": sqe(0x09, 6, 0, 7, 3 | (3 << 16)),
    "get_features": sqe(0x0A, 7, 0, 7 | (1 << 8)),
    "abort": sqe(0x08, 8, 0, 1 | (9 << 16)),
    "keep_alive": sqe(0x18, 9),
    "aer": sqe(0x0C, 10),
    "read": sqe(0x02, 11, 1, 0x1000, 0, 7 | (1 << 30)),
    "write": sqe(0x01, 12, 1, 0x2000, 1, 255),
    "flush": sqe(0x00, 13, 1),
    "dsm": sqe(0x09, 14, 1, 1, 4),
    "write_zeroes": sqe(0x08, 15, 1, 0, 0, 0xFFFF | (1 << 25)),
    "connect_admin": sqe(0x7F, 16, 1, 0, 31, 120000),
    "connect_io": sqe(0x7F, 17, 1, 1 << 16, 127),
    "property_get": sqe(0x7F, 18, 4, 1, 0),
    "property_set": sqe(0x7F, 19, 0, 0, 0x14, 0x460001),
    "disconnect": sqe(0x7F, 20, 8),
}
for name, data in cmds.items():
    write("command_parse", name, data)


# identify_log_parse: selector byte (see the target), then the buffer.
def padded(s, n, pad=b" "):
    b = s.encode()
    return b + pad * (n - len(b))


ctrl = bytearray(4096)
struct.pack_into("<HH", ctrl, 0, 0x1B36, 0x1AF4)
ctrl[4:24] = padded("XB0001", 20)
ctrl[24:64] = padded("xbdev controller", 40)
ctrl[64:72] = padded("1.0", 8)
ctrl[77] = 5  # mdts
ctrl[768:768 + 24] = b"nqn.2024-01.io.xbdev:ctl"
ns = bytearray(4096)
struct.pack_into("<QQQ", ns, 0, 1 << 20, 1 << 20, 1 << 20)
ns[25] = 1  # nlbaf
ns[26] = 1  # flbas
struct.pack_into("<HBB", ns, 128, 0, 9, 0)
struct.pack_into("<HBB", ns, 132, 0, 12, 0)
desc = (bytes([1, 8, 0, 0]) + bytes(range(8)) + bytes([2, 16, 0, 0]) + bytes(range(16))
        + bytes([3, 16, 0, 0]) + bytes(range(16, 32)) + bytes([4, 1, 0, 0, 0]))
nslist = struct.pack("<5I", 1, 2, 5, 9, 0)
smart = bytearray(512)
smart[1:3] = struct.pack("<H", 300)
errlog = bytearray(128)
struct.pack_into("<QHHHHQI", errlog, 0, 7, 1, 33, 0x4004, 0xFFFF, 100, 1)
fw = bytearray(512)
fw[0] = 0x11
fw[8:16] = padded("FW1", 8)
ana = (struct.pack("<QH6x", 5, 2)
       + struct.pack("<IIQB15x", 1, 2, 5, 1) + struct.pack("<2I", 1, 2)
       + struct.pack("<IIQB15x", 2, 1, 5, 3) + struct.pack("<I", 3))
disc = bytearray(2048)
struct.pack_into("<QQH", disc, 0, 3, 1, 0)
e = 1024
disc[e:e + 4] = bytes([3, 1, 2, 0])
struct.pack_into("<HHH", disc, e + 4, 1, 0xFFFF, 32)
disc[e + 32:e + 64] = padded("4420", 32)
disc[e + 256:e + 256 + 22] = b"nqn.2024-01.io.xbdev:x"
disc[e + 512:e + 768] = padded("127.0.0.1", 256)
conn = bytearray(1024)
conn[0:16] = bytes(range(16))
struct.pack_into("<H", conn, 16, 0xFFFF)
conn[256:256 + 22] = b"nqn.2024-01.io.xbdev:x"
conn[512:512 + 22] = b"nqn.2014-08.org.host:h"
dsm = bytes([1]) + struct.pack("<IIQ", 0, 8, 100) + struct.pack("<IIQ", 0, 16, 4096)
for name, sel, data in [
    ("identify_ctrl", 0, ctrl), ("identify_ns", 1, ns), ("ns_descriptors", 2, desc),
    ("ns_list", 3, nslist), ("smart", 4, smart), ("error_log", 5, errlog), ("firmware", 6, fw),
    ("ana", 7, ana), ("discovery", 8, disc), ("connect", 9, conn), ("dsm", 10, dsm),
]:
    write("identify_log_parse", name, bytes([sel]) + bytes(data))
