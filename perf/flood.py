#!/usr/bin/env python3
"""Handshake-initiation flooder for perf/flood.sh (stdlib only).

Sends ntmtun handshake initiations (docs/protocol.md: type | 3 zero bytes | sender index |
Noise message 1 (random bytes) | mac1 | mac2 = 0) to TARGET at a fixed rate, for a bounded
time and packet count. Sources are spoofed: each packet comes from a random address in
SPOOF_NET (a raw IPv4 socket with IP_HDRINCL), which is what defeats a per-source rate limit.

  --mac1 valid   mac1 made for RESPONDER_PUBKEY (public keys are public): the packet passes the
                 responder's cheap check and would cost a Diffie-Hellman without the cookie
  --mac1 random  random mac1: dropped after one hash

Only ever run inside a lab namespace (perf/flood.sh does): it refuses targets and sources
outside the documentation ranges of shared/LAB.md.
"""

import argparse
import base64
import hashlib
import hmac
import ipaddress
import os
import socket
import struct
import sys
import time

LAB_NETS = [ipaddress.ip_network(n) for n in ("198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24")]
NOISE_LEN = 96 + 9 + 16  # Noise IK message 1 with a 9-byte PeerHello


def in_lab(addr):
    return any(addr in n for n in LAB_NETS)


def ip_header(src, dst, payload_len, ident):
    # Version/IHL, TOS, total length, id, flags/fragment, TTL, UDP, checksum (kernel fills it).
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ident & 0xFFFF, 0, 64,
                       socket.IPPROTO_UDP, 0, src.packed, dst.packed)


def initiation(kind, mac1_key):
    body = bytes([kind, 0, 0, 0]) + os.urandom(4) + os.urandom(NOISE_LEN)
    if mac1_key is None:
        mac1 = os.urandom(16)
    else:
        mac1 = hmac.new(mac1_key, body, hashlib.sha256).digest()[:16]
    return body + mac1 + bytes(16)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, help="IPv4:PORT of the responder")
    ap.add_argument("--kind", choices=["node", "dc"], default="node",
                    help="node: HANDSHAKE_INIT (0x01); dc: DC_HANDSHAKE_INIT (0x11)")
    ap.add_argument("--mac1", choices=["valid", "random"], default="valid")
    ap.add_argument("--pubkey", help="the responder's public key (base64), for --mac1 valid")
    ap.add_argument("--spoof-net", default="198.51.100.128/25")
    ap.add_argument("--rate", type=int, default=20000, help="packets per second")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max-packets", type=int, default=2_000_000)
    a = ap.parse_args()

    host, port = a.target.rsplit(":", 1)
    dst = ipaddress.ip_address(host)
    spoof = ipaddress.ip_network(a.spoof_net)
    if not in_lab(dst) or not all(in_lab(x) for x in (spoof.network_address, spoof.broadcast_address)):
        sys.exit("flood.py: target and sources must be inside the lab's documentation ranges")
    if not (1 <= a.rate <= 1_000_000 and 0 < a.seconds <= 600 and 0 < a.max_packets <= 100_000_000):
        sys.exit("flood.py: rate 1-1e6, seconds 0-600, max-packets 1-1e8")
    key = None
    if a.mac1 == "valid":
        if not a.pubkey:
            sys.exit("flood.py: --mac1 valid needs --pubkey")
        pub = base64.b64decode(a.pubkey)
        key = hashlib.sha256(b"ntmtun/1 mac1" + pub).digest()
    kind = 0x01 if a.kind == "node" else 0x11

    # A pool of ready packets (random sources, indexes and Noise bytes), sent round-robin.
    hosts = spoof.num_addresses - 2
    pool = []
    for i in range(4096):
        src = spoof.network_address + 1 + (int.from_bytes(os.urandom(4), "big") % hosts)
        payload = initiation(kind, key)
        sport = 1024 + (int.from_bytes(os.urandom(2), "big") % 60000)
        udp = struct.pack("!HHHH", sport, int(port), 8 + len(payload), 0) + payload  # checksum 0: none
        pool.append(ip_header(src, dst, len(udp), i) + udp)

    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    s.setblocking(False)
    burst = max(1, a.rate // 1000)  # a burst every millisecond
    start = time.monotonic()
    end = start + a.seconds
    sent = errors = 0
    i = 0
    while sent < a.max_packets:
        now = time.monotonic()
        if now >= end:
            break
        due = min(a.max_packets, int((now - start) * a.rate) + burst)
        while sent < due:
            try:
                s.sendto(pool[i % len(pool)], (str(dst), 0))
            except (BlockingIOError, OSError):
                errors += 1
            sent += 1
            i += 1
        time.sleep(0.001)
    elapsed = time.monotonic() - start
    print(f'{{"sent": {sent}, "errors": {errors}, "seconds": {elapsed:.3f}, '
          f'"pps": {sent / elapsed if elapsed else 0:.0f}}}')


if __name__ == "__main__":
    main()
