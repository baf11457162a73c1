#!/usr/bin/env python3
"""Tools for the hostile-network lab tests (tests/lab_hostile.rs); standard library only.

  hostile.py extract PCAP
      print one line per UDP datagram of a tcpdump capture (Ethernet or Linux cooked):
      "SRC SPORT DST DPORT HEX_PAYLOAD"
  hostile.py send --src IP --sport N --dst IP --dport N FILE
      send every line of FILE (hex, one datagram a line) as one UDP datagram from SRC:SPORT,
      which need not be ours (a raw socket writes the IP header: spoofing), with the UDP
      checksum computed here (captures from veths carry unfinished ones); prints the count
  hostile.py numbered --dst IP --port N --count N [--first K]
      send COUNT UDP datagrams "ntm-seq K".. to DST:PORT, paced, from an ordinary socket
  hostile.py sink --bind IP --port N --seconds S
      count datagrams "ntm-seq K" on IP:PORT: print each K on its own line (flushed) until
      S seconds have passed (a bound: the test stops it earlier, by PID)

Only ever run inside the lab's network namespaces (scripts/lab.sh), against lab addresses.
"""

import argparse
import ipaddress
import socket
import struct
import sys
import time

PCAP_MAGIC = {0xA1B2C3D4: "<", 0xD4C3B2A1: ">", 0xA1B23C4D: "<", 0x4D3CB2A1: ">"}
LINK_ETHERNET = 1
LINK_LINUX_SLL = 113
LINK_LINUX_SLL2 = 276


def pcap_frames(path):
    """Yields (linktype, frame bytes) of a classic pcap file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    (magic,) = struct.unpack("<I", data[:4])
    endian = PCAP_MAGIC.get(magic)
    if endian is None:
        sys.exit(f"hostile.py: {path} is not a pcap file (magic {magic:#x}); use tcpdump -w")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[off + 8 : off + 12])[0]
        off += 16
        yield linktype, data[off : off + incl]
        off += incl


def ip_packet(linktype, frame):
    """The IP packet inside a frame, or None."""
    if linktype == LINK_ETHERNET:
        off, ethertype = 12, None
        ethertype = struct.unpack("!H", frame[off : off + 2])[0]
        off += 2
        while ethertype == 0x8100 and len(frame) >= off + 4:  # VLAN tags
            ethertype = struct.unpack("!H", frame[off + 2 : off + 4])[0]
            off += 4
    elif linktype == LINK_LINUX_SLL:
        ethertype, off = struct.unpack("!H", frame[14:16])[0], 16
    elif linktype == LINK_LINUX_SLL2:
        ethertype, off = struct.unpack("!H", frame[0:2])[0], 20
    else:
        return None
    return frame[off:] if ethertype in (0x0800, 0x86DD) else None


def udp_of(pkt):
    """(src, sport, dst, dport, payload) of a UDP packet (no IPv6 extension headers), or None."""
    if len(pkt) < 1:
        return None
    if pkt[0] >> 4 == 4 and len(pkt) >= 20:
        ihl = (pkt[0] & 15) * 4
        total = struct.unpack("!H", pkt[2:4])[0]
        if pkt[9] != 17 or struct.unpack("!H", pkt[6:8])[0] & 0x3FFF:  # not UDP, or a fragment
            return None
        src, dst, udp = pkt[12:16], pkt[16:20], pkt[ihl:total]
    elif pkt[0] >> 4 == 6 and len(pkt) >= 40:
        if pkt[6] != 17:
            return None
        plen = struct.unpack("!H", pkt[4:6])[0]
        src, dst, udp = pkt[8:24], pkt[24:40], pkt[40 : 40 + plen]
    else:
        return None
    if len(udp) < 8:
        return None
    sport, dport, ulen = struct.unpack("!HHH", udp[:6])
    return (
        ipaddress.ip_address(src),
        sport,
        ipaddress.ip_address(dst),
        dport,
        udp[8:ulen],
    )


def cmd_extract(args):
    n = 0
    for linktype, frame in pcap_frames(args.pcap):
        pkt = ip_packet(linktype, frame)
        d = pkt and udp_of(pkt)
        if d:
            src, sport, dst, dport, payload = d
            print(f"{src} {sport} {dst} {dport} {payload.hex()}")
            n += 1
    print(f"hostile.py: {n} UDP datagrams in {args.pcap}", file=sys.stderr)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_packet(src, sport, dst, dport, payload):
    """A whole IP packet carrying one UDP datagram, checksums computed."""
    ulen = 8 + len(payload)
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, ulen)
    else:
        pseudo = src.packed + dst.packed + struct.pack("!IxxxB", ulen, 17)
    header = struct.pack("!HHHH", sport, dport, ulen, 0)
    csum = checksum(pseudo + header + payload) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, ulen, csum) + payload
    if src.version == 4:
        # The kernel fills in the IP header checksum and ID (IP_HDRINCL).
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0x4000, 64, 17, 0,
                         src.packed, dst.packed)
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, ulen, 17, 64, src.packed, dst.packed)
    return ip + udp


def cmd_send(args):
    src, dst = ipaddress.ip_address(args.src), ipaddress.ip_address(args.dst)
    if src.version != dst.version:
        sys.exit(f"hostile.py: --src {src} and --dst {dst} are not the same IP version")
    family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
    # IPPROTO_RAW: we write the IP header (IPv4 and, on Linux, IPv6 alike).
    sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sent = 0
    with open(args.file) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            payload = bytes.fromhex(line)
            sock.sendto(udp_packet(src, args.sport, dst, args.dport, payload), (str(dst), 0))
            sent += 1
            if sent % 64 == 0:
                time.sleep(0.002)  # paced: the test counts drops, not socket overruns
    print(sent)


def cmd_numbered(args):
    family = socket.AF_INET6 if ":" in args.dst else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    for k in range(args.first, args.first + args.count):
        sock.sendto(f"ntm-seq {k}".encode(), (args.dst, args.port))
        if k % 32 == 31:
            time.sleep(0.005)
    print(args.count)


def cmd_sink(args):
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((args.bind, args.port))
    deadline = time.monotonic() + args.seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        sock.settimeout(left)
        try:
            data = sock.recv(2048)
        except socket.timeout:
            return
        if data.startswith(b"ntm-seq "):
            print(data[8:].decode(errors="replace"), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract")
    e.add_argument("pcap")
    s = sub.add_parser("send")
    s.add_argument("--src", required=True)
    s.add_argument("--sport", type=int, required=True)
    s.add_argument("--dst", required=True)
    s.add_argument("--dport", type=int, required=True)
    s.add_argument("file")
    n = sub.add_parser("numbered")
    n.add_argument("--dst", required=True)
    n.add_argument("--port", type=int, required=True)
    n.add_argument("--count", type=int, required=True)
    n.add_argument("--first", type=int, default=0)
    k = sub.add_parser("sink")
    k.add_argument("--bind", required=True)
    k.add_argument("--port", type=int, required=True)
    k.add_argument("--seconds", type=float, required=True)
    args = p.parse_args()
    {"extract": cmd_extract, "send": cmd_send, "numbered": cmd_numbered, "sink": cmd_sink}[
        args.cmd
    ](args)


if __name__ == "__main__":
    main()
