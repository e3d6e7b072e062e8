#!/usr/bin/env python3
"""Set the COFF TimeDateStamp of a PE/EFI binary to SOURCE_DATE_EPOCH, in place.

objcopy stamps the unified kernel image with the wall-clock time when it writes the PE header,
so two otherwise identical builds differ in four bytes. This rewrites those bytes and, when the
optional header carries a checksum, recomputes it (the checksum covers the timestamp).

    pe_timestamp.py FILE EPOCH
"""

import struct
import sys


def pe_checksum(data, checksum_offset):
    total = 0
    for i in range(0, len(data) - len(data) % 2, 2):
        if checksum_offset <= i < checksum_offset + 4:
            continue
        total += data[i] | data[i + 1] << 8
        total = (total & 0xFFFF) + (total >> 16)
    if len(data) % 2:
        total += data[-1]
        total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return (total + len(data)) & 0xFFFFFFFF


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path, epoch = sys.argv[1], int(sys.argv[2])
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if data[:2] != b"MZ":
        sys.exit(f"{path}: not a PE file")
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    if data[pe:pe + 4] != b"PE\0\0":
        sys.exit(f"{path}: no PE signature")
    coff = pe + 4
    struct.pack_into("<I", data, coff + 4, epoch)
    optional = coff + 20
    checksum_offset = optional + 64  # same offset in PE32 and PE32+ optional headers
    if struct.unpack_from("<I", data, checksum_offset)[0] != 0:
        struct.pack_into("<I", data, checksum_offset, pe_checksum(data, checksum_offset))
    with open(path, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main()
