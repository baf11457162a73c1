#!/usr/bin/env python3
"""SVG chart of a perf/throughput.sh result: throughput, ping and CPU per Gbit by mode.

Usage: chart.py RESULT.json OUT.svg. Standard library only (no plotting package needed).
"""
import json
import sys
from xml.sax.saxutils import escape

SERIES = [  # (label, key in medians, colour)
    ("TCP x1", "tcp.rx_mbps", "#1f77b4"),
    ("TCP x4", "tcp4.rx_mbps", "#aec7e8"),
    ("UDP 1404 B", "udp.rx_mbps", "#ff7f0e"),
    ("UDP 1400 B", "udp1400.rx_mbps", "#ffbb78"),
    ("UDP <1% loss", "udpmax.rx_mbps", "#d62728"),
]
LABEL_W, BAR_H, GAP, PANEL_W = 120, 7, 10, 330


def panel(x0, y0, title, modes, bars, fmtv, scale_max):
    """A horizontal bar panel; bars: mode -> [(value, colour)]. Returns (svg parts, height)."""
    out = [f'<text x="{x0}" y="{y0 + 12}" font-weight="bold">{escape(title)}</text>']
    y = y0 + 24
    for m in modes:
        vals = bars.get(m, [])
        h = max(1, len(vals)) * BAR_H
        out.append(f'<text x="{x0 + LABEL_W - 6}" y="{y + h / 2 + 4}" text-anchor="end">{escape(m)}</text>')
        if not vals:
            out.append(f'<text x="{x0 + LABEL_W + 4}" y="{y + h / 2 + 4}" fill="#999">n/a</text>')
        for i, (v, colour) in enumerate(vals):
            if v is None:
                continue
            w = 0 if scale_max <= 0 else PANEL_W * v / scale_max
            yy = y + i * BAR_H
            out.append(f'<rect x="{x0 + LABEL_W}" y="{yy}" width="{w:.1f}" height="{BAR_H - 1}" fill="{colour}"/>')
            out.append(f'<text x="{x0 + LABEL_W + w + 3:.1f}" y="{yy + BAR_H - 1}" font-size="8">{fmtv(v)}</text>')
        y += h + GAP
    return out, y - y0


def main():
    result, out_path = sys.argv[1], sys.argv[2]
    with open(result) as f:
        r = json.load(f)
    med = r["medians"]
    modes = r["modes"]
    get = lambda m, k: med.get(m, {}).get(k)  # noqa: E731

    parts = []
    thr = {m: [(None if get(m, k) is None else get(m, k) / 1000, c) for _, k, c in SERIES]
           for m in modes if any(get(m, k) is not None for _, k, c in SERIES)}
    mx = max([v for vals in thr.values() for v, _ in vals if v is not None] or [1])
    p, h1 = panel(10, 40, "Throughput, receiver (Gb/s)", modes, thr, lambda v: f"{v:.2f}", mx)
    parts += p
    lx = 10 + LABEL_W
    for i, (label, _, colour) in enumerate(SERIES):
        parts.append(f'<rect x="{lx + i * 90}" y="{40 + h1}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{lx + i * 90 + 14}" y="{40 + h1 + 9}">{label}</text>')
    y2 = 40 + h1 + 24
    ping = {m: [(get(m, "ping.rtt_avg_us"), "#2ca02c"), (get(m, "ping_fast.rtt_avg_us"), "#98df8a")]
            for m in modes if get(m, "ping.rtt_avg_us") is not None}
    mx = max([v for vals in ping.values() for v, _ in vals if v is not None] or [1])
    p, h2 = panel(10, y2, "Ping RTT, avg (µs): -i 0.05 / -i 0.002", modes, ping, lambda v: f"{v:,.0f}", mx)
    parts += p
    cpu = {m: [(get(m, "tcp.cpu_s_per_gbit"), "#d62728")] for m in modes
           if get(m, "tcp.cpu_s_per_gbit") is not None}
    mx = max([v for vals in cpu.values() for v, _ in vals if v is not None] or [1])
    x3 = 10 + LABEL_W + PANEL_W + 60
    p, h3 = panel(x3, y2, "CPU s per Gbit, both tunnel ends (TCP x1)", modes, cpu,
                  lambda v: f"{v:.3f}", mx)
    parts += p
    height = y2 + max(h2, h3) + 20
    width = x3 + LABEL_W + PANEL_W + 60
    e = r["environment"]
    title = (f"ntmtun perf {e['started'][:10]} (commit {e['commit']}, {e['cpus']} vCPU, "
             f"load {e['loadavg_before']}; medians of {e['repeats']})")
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="10">',
           f'<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="20" font-size="13" font-weight="bold">{escape(title)}</text>']
    svg += parts
    svg.append("</svg>")
    with open(out_path, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
