#!/usr/bin/env python3
"""Extract single Jool Generic Netlink messages from an nlmon capture.

usage: extract.py CAPTURE.pcap SEQ PORTID DIRECTION OUT.hex

Writes the netlink message (nlmsghdr included) whose sequence number and
port id match, sent in DIRECTION ("request": user to kernel, "reply":
kernel to user), as lower-case hex, 32 bytes a line. The capture is
LINKTYPE_NETLINK (253): each record is a 16-byte cooked header (packet
type, ARPHRD_NETLINK, ..., protocol) followed by the netlink message.
"""
import struct
import sys


def records(path):
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic != 0xA1B2C3D4:
        sys.exit("not a little-endian microsecond pcap")
    off = 24
    while off < len(data):
        _, _, incl, _ = struct.unpack("<IIII", data[off:off + 16])
        off += 16
        yield data[off:off + incl]
        off += incl


def main():
    path, seq, portid, direction, out = sys.argv[1:6]
    seq, portid = int(seq), int(portid)
    found = []
    for rec in records(path):
        msg = rec[16:]
        if len(msg) < 16:
            continue
        length, typ, flags, s, p = struct.unpack("<IHHII", msg[:16])
        is_request = flags & 0x1 != 0
        if typ != 0x20 or s != seq or p != portid:
            continue
        if is_request != (direction == "request"):
            continue
        found.append(msg[:length])
    if len(found) == 0:
        sys.exit("no such message")
    # nlmon sees each message once per direction; identical copies are fine.
    if any(m != found[0] for m in found):
        sys.exit("ambiguous: %d different messages" % len(found))
    h = found[0].hex()
    with open(out, "w") as f:
        for i in range(0, len(h), 64):
            f.write(h[i:i + 64] + "\n")


if __name__ == "__main__":
    main()
