#!/usr/bin/env python3
"""Split cpu-clock samples of a tunnel process into the paper's per-packet categories.

Usage: perf script -F comm,tid,period,event,ip,sym,dso -i perf.data | categories.py PACKETS
Prints JSON: per category the samples, the CPU time (sum of the sample periods, ns), that time
divided by PACKETS (ns per packet) and the leaf symbols that took most of it. A sample goes to
the first category whose pattern matches any frame of its call chain, in this order:

  softirq     the kernel's network softirq (veth, bridge, the other host's IP/UDP receive) that
              ran on the node's time: in the lab both hosts share the machine, so part of the
              peer's receive path is charged to whoever was on the CPU; on real hardware the NIC
              and the other host do this work
  wait        sleeping and waking: poll/epoll/io_uring waits, the scheduler (also when the
              thread was preempted in the middle of other work)
  crypto      the AEAD: aws-lc / ring / aes-gcm symbols
  tun_read    reading the TUN device (read/readv/io_uring read into tun_chr_read_iter)
  tun_write   writing the TUN device (tun_chr_write_iter / tun_get_user)
  udp_send    sending on the UDP socket (sendto/sendmsg/sendmmsg, io_uring sendmsg) and the
              kernel's transmit path that runs in the sender's context
  udp_recv    receiving from the UDP socket (recvfrom/recvmsg/recvmmsg, io_uring recvmsg)
  processing  everything else: the node's own code (parsing, peer lookup, headers, replay
              window, GSO split / GRO coalesce) and other syscalls

Costs nothing when off: it reads samples the kernel took anyway (`perf record -e cpu-clock`).
"""
import json
import re
import sys
from collections import Counter, defaultdict

CATEGORIES = [
    ("softirq", re.compile(r"\bhandle_softirqs|__do_softirq|net_rx_action|do_softirq")),
    ("wait", re.compile(r"do_sys_poll|\bdo_poll|ep_poll|do_epoll_wait|io_cqring_wait|"
                        r"\bschedule\b|__schedule|futex_wait")),
    ("crypto", re.compile(r"aws_lc|aes_gcm|aesni|aes_hw|gcm_(?:gmult|ghash|init|enc|dec)|ghash|"
                          r"EVP_AEAD|CRYPTO_gcm|ring_core|polyval|aes::|GFp_|vpclmul|aesenc")),
    ("tun_read", re.compile(r"\btun_(?:chr_read_iter|do_read|put_user|ring_recv)")),
    ("tun_write", re.compile(r"\btun_(?:chr_write_iter|get_user)")),
    ("udp_send", re.compile(r"__sys_send(?:msg|mmsg|to)|__x64_sys_send|udpv?6?_sendmsg|"
                            r"\budp_sendmsg|io_sendmsg|io_send_zc")),
    ("udp_recv", re.compile(r"__sys_recv(?:msg|mmsg|from)|__x64_sys_recv|\budpv?6?_recvmsg|"
                            r"io_recvmsg|io_recv\b")),
]
FRAME = re.compile(r"^\s+[0-9a-f]+\s+(.*?)(?:\s+\((.*)\))?$")


def classify(frames):
    for name, pat in CATEGORIES:
        if any(pat.search(f) for f in frames):
            return name
    return "processing"


def main():
    packets = int(sys.argv[1])
    totals = {name: [0, 0] for name, _ in CATEGORIES}
    totals["processing"] = [0, 0]
    leaves = defaultdict(Counter)  # category -> leaf symbol -> ns
    period, frames = None, []

    def flush():
        if period is not None:
            c = classify(frames)
            totals[c][0] += 1
            totals[c][1] += period
            leaves[c][frames[0] if frames else "?"] += period

    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if not line[0].isspace():  # a sample's header: comm tid period event:
            flush()
            toks = line.split()
            period = next((int(t) for t in reversed(toks) if t.isdigit()), 0)
            frames = []
        else:
            m = FRAME.match(line)
            if m:
                frames.append(m.group(1))
    flush()
    total_ns = sum(v[1] for v in totals.values())
    out = {
        "packets": packets,
        "total_ns": total_ns,
        "total_ns_per_packet": total_ns / packets if packets else None,
        "categories": {
            k: {"samples": s, "ns": ns, "ns_per_packet": ns / packets if packets else None,
                "top": [[sym, round(v / ns, 3)] for sym, v in leaves[k].most_common(5)] if ns else []}
            for k, (s, ns) in totals.items()
        },
    }
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
