#!/usr/bin/env python3
"""Report of perf/throughput.sh: medians, ratios and the issue's targets, as markdown and JSON.

Usage: report.py SAMPLES.tsv FAILURES.tsv MODES.tsv ENV_JSON BASE
  SAMPLES.tsv   rep, mode, test, metric, value (one sample a line)
  FAILURES.tsv  rep, mode, reason (a mode that did not come up in that repetition)
  MODES.tsv     mode, key, value (what ran: peer versions, the nodes' status)
Writes BASE.md and BASE.json, prints the main table. Standard library only.
"""
import json
import statistics
import sys
from collections import defaultdict

PEERS = ("wireguard_go", "boringtun")
PLAINS = ("plain", "plain_nooff")

# (label, test, metric, decimals, higher is better)
COLUMNS = [
    ("TCP x1 (Mb/s)", "tcp", "rx_mbps", 0, True),
    ("TCP x4 (Mb/s)", "tcp4", "rx_mbps", 0, True),
    ("UDP 1404 B (Mb/s)", "udp", "rx_mbps", 0, True),
    ("loss (%)", "udp", "loss_percent", 1, False),
    ("UDP 1400 B (Mb/s)", "udp1400", "rx_mbps", 0, True),
    ("loss (%)", "udp1400", "loss_percent", 1, False),
    ("UDP 1404 B, < 1% loss (Mb/s)", "udpmax", "rx_mbps", 0, True),
    ("UDP 1400 B, < 1% loss (Mb/s)", "udpmax1400", "rx_mbps", 0, True),
    ("ping (µs)", "ping", "rtt_avg_us", 0, False),
    ("ping -i 0.002 (µs)", "ping_fast", "rtt_avg_us", 0, False),
    ("CPU s per Gbit, TCP x1", "tcp", "cpu_s_per_gbit", 3, False),
]


def load(samples_path, failures_path, info_path):
    samples = defaultdict(list)  # (mode, test, metric) -> values in repetition order
    modes = []
    with open(samples_path) as f:
        for line in f:
            rep, mode, test, metric, value = line.rstrip("\n").split("\t")
            if mode not in modes:
                modes.append(mode)
            try:
                samples[(mode, test, metric)].append(float(value))
            except ValueError:
                pass
    failures = defaultdict(list)
    with open(failures_path) as f:
        for line in f:
            rep, mode, reason = line.rstrip("\n").split("\t", 2)
            failures[mode].append(f"rep {rep}: {reason}")
            if mode not in modes:
                modes.append(mode)
    info = defaultdict(dict)
    with open(info_path) as f:
        for line in f:
            mode, key, value = line.rstrip("\n").split("\t", 2)
            try:
                info[mode][key] = json.loads(value)
            except ValueError:
                info[mode][key] = value
    return samples, failures, info, modes


def main():
    samples_path, failures_path, info_path, env_json, base = sys.argv[1:6]
    env = json.loads(env_json)
    samples, failures, info, modes = load(samples_path, failures_path, info_path)

    def med(mode, test, metric):
        v = samples.get((mode, test, metric))
        return statistics.median(v) if v else None

    medians = defaultdict(dict)
    for (mode, test, metric), v in samples.items():
        medians[mode][f"{test}.{metric}"] = statistics.median(v)

    peers = [m for m in modes if m in PEERS and med(m, "tcp", "rx_mbps") is not None]
    ntm = [m for m in modes if m.startswith("ntmtun")]

    def best_peer(test, metric, higher):
        vals = [(med(p, test, metric), p) for p in peers if med(p, test, metric) is not None]
        if not vals:
            return None, None
        return max(vals) if higher else min(vals)

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    # Ratios of every ntmtun mode against plain, plain without offloads and the best peer.
    ratios = {}
    for m in ntm:
        r = {}
        for label, test, metric, _, higher in COLUMNS:
            if metric == "loss_percent":
                continue
            key = f"{test}.{metric}"
            for b in PLAINS:
                if b in modes:
                    r[f"{key}/{b}"] = ratio(med(m, test, metric), med(b, test, metric))
            bp, who = best_peer(test, metric, higher)
            if who:
                r[f"{key}/best_peer"] = ratio(med(m, test, metric), bp)
                r[f"{key}/best_peer_is"] = who
        ratios[m] = r

    targets = check_targets("ntmtun", med, best_peer, modes)

    out = {
        "environment": env,
        "modes": modes,
        "failed": {m: v for m, v in failures.items()},
        "mode_info": info,
        "medians": medians,
        "ratios": ratios,
        "targets": targets,
        "samples": {f"{m}.{t}.{k}": v for (m, t, k), v in sorted(samples.items())},
    }
    with open(base + ".json", "w") as f:
        json.dump(out, f, indent=2, ensure_ascii=False)
        f.write("\n")

    md = markdown(env, modes, samples, failures, med, ratios, targets, peers, ntm, base)
    with open(base + ".md", "w") as f:
        f.write(md)


def check_targets(m, med, best_peer, modes):
    """The issue's targets for mode M, each with the measured value and met / short by."""
    t = []

    def add(name, measured, goal, unit, higher=True):
        if measured is None or goal is None:
            t.append({"target": name, "measured": measured, "goal": goal, "unit": unit, "met": None})
            return
        met = measured >= goal if higher else measured <= goal
        t.append({"target": name, "measured": measured, "goal": goal, "unit": unit, "met": met})

    def r(a, b):
        return None if a is None or b in (None, 0) else a / b

    bp_tcp, _ = best_peer("tcp", "rx_mbps", True)
    add("TCP x1 >= 6x the best peer", r(med(m, "tcp", "rx_mbps"), bp_tcp), 6, "x")
    add("TCP x1 >= 60% of plain with offloads off",
        r(med(m, "tcp", "rx_mbps"), med("plain_nooff", "tcp", "rx_mbps")), 0.6, "x")
    add("TCP x4 not below TCP x1", r(med(m, "tcp4", "rx_mbps"), med(m, "tcp", "rx_mbps")), 1.0, "x")
    bp_udp, _ = best_peer("udp", "rx_mbps", True)
    add("UDP 1404 B >= 4x the best peer", r(med(m, "udp", "rx_mbps"), bp_udp), 4, "x")
    add("UDP 1404 B flood: loss < 1%", med(m, "udp", "loss_percent"), 1.0, "%", higher=False)
    bp_1400, _ = best_peer("udp1400", "rx_mbps", True)
    add("UDP 1400 B (paper's test) >= 4x the best peer", r(med(m, "udp1400", "rx_mbps"), bp_1400), 4, "x")
    # the loss-bounded rates (highest rate with < 1% loss): the "4x with under 1% loss"
    for test, size in (("udpmax", 1404), ("udpmax1400", 1400)):
        if any(med(x, test, "steps") is not None for x in modes):
            bp, _ = best_peer(test, "rx_mbps", True)
            add(f"UDP {size} B at < 1% loss >= 4x the best peer's", r(med(m, test, "rx_mbps"), bp), 4, "x")
    for test, label in (("ping", "ping -i 0.05"), ("ping_fast", "ping -i 0.002")):
        p = med("plain", test, "rtt_avg_us")
        add(f"{label} <= plain + 30 µs", med(m, test, "rtt_avg_us"), None if p is None else p + 30,
            "µs", higher=False)
    wg = med("wireguard_go", "tcp", "cpu_s_per_gbit")
    add("CPU per Gbit <= 1/4 of wireguard-go's", med(m, "tcp", "cpu_s_per_gbit"),
        None if wg is None else wg / 4, "CPU s/Gbit", higher=False)
    return t


def fmt(x, nd=1):
    return "n/a" if x is None else f"{x:,.{nd}f}"


def verdict(t):
    if t["met"] is None:
        return "n/a"
    if t["met"]:
        return "met"
    m, g = t["measured"], t["goal"]
    if t["unit"] == "x":
        return f"short by {g / m:.1f}x" if m > 0 else "short"
    if t["unit"] == "µs":
        return f"short by {m - g:,.0f} µs"
    if t["unit"] == "%":
        return f"short by {m - g:.1f} points"
    return f"short by {m / g:.1f}x" if g > 0 else "short"


def markdown(env, modes, samples, failures, med, ratios, targets, peers, ntm, base):
    e = env
    hdr = "| mode | " + " | ".join(c[0] for c in COLUMNS) + " |"
    lines = [hdr, "|---|" + "---:|" * len(COLUMNS)]
    for m in modes:
        if not any(k[0] == m for k in samples):
            why = "; ".join(failures.get(m, ["no samples"]))
            lines.append(f"| {m} | failed: {why} |" + " |" * (len(COLUMNS) - 1))
            continue
        cells = [fmt(med(m, t, k), nd) for _, t, k, nd, _ in COLUMNS]
        note = " (failed in some repetitions)" if m in failures else ""
        lines.append(f"| {m}{note} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)

    rl = []
    ratio_cols = [c for c in COLUMNS if c[2] != "loss_percent"]
    if ntm:
        rl = ["| ntmtun mode vs | " + " | ".join(c[0] for c in ratio_cols) + " |",
              "|---|" + "---:|" * len(ratio_cols)]
        for m in ntm:
            for b in [b for b in PLAINS if b in modes] + (["best_peer"] if peers else []):
                cells = []
                for _, t, k, _, _ in ratio_cols:
                    v = ratios.get(m, {}).get(f"{t}.{k}/{b}")
                    who = ratios.get(m, {}).get(f"{t}.{k}/best_peer_is", "")
                    s = "n/a" if v is None else f"{v:.2f}"
                    if b == "best_peer" and v is not None:
                        s += f" ({who})"
                    cells.append(s)
                rl.append(f"| {m} / {b} | " + " | ".join(cells) + " |")
    ratio_table = "\n".join(rl)

    tl = ["| target (issue 4) | measured (ntmtun) | goal | verdict |", "|---|---:|---:|---|"]
    for t in targets:
        nd = 0 if t["unit"] == "µs" else 2
        unit = t["unit"] if t["unit"] != "x" else "×"
        tl.append(f"| {t['target']} | {fmt(t['measured'], nd)} {unit} | {fmt(t['goal'], nd)} {unit} | {verdict(t)} |")
    target_table = "\n".join(tl)

    drop_rows = [
        ("alice: UDP receive-buffer drops (RcvbufErrors)", "alice_udp_rcvbuf_errors"),
        ("bob: UDP send-buffer errors (SndbufErrors)", "bob_udp_sndbuf_errors"),
        ("bob: tunnel interface tx_dropped (TUN queue full)", "bob_tun_tx_dropped"),
        ("alice: eth0 rx_dropped", "alice_eth0_rx_dropped"),
    ]
    dl = ["| counter (median per UDP 1404 B run) | " + " | ".join(modes) + " |",
          "|---|" + "---:|" * len(modes)]
    for label, metric in drop_rows:
        dl.append(f"| {label} | " + " | ".join(fmt(med(m, "udp", metric), 0) for m in modes) + " |")
    drops = "\n".join(dl)

    def series(m, t, k, nd):
        v = samples.get((m, t, k), [])
        return ", ".join(fmt(x, nd) for x in v) or "n/a"

    sl = ["| run | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
    for label, t, k, nd, _ in COLUMNS:
        if k == "loss_percent":
            label = f"{t} loss (%)"
        sl.append(f"| {label} | " + " | ".join(series(m, t, k, nd) for m in modes) + " |")
    sample_table = "\n".join(sl)

    # the loss-bounded search, per run: offered rate that passed, or the lowest rate tried
    ul = []
    for t, size in (("udpmax", 1404), ("udpmax1400", 1400)):
        if not any(samples.get((m, t, "steps")) for m in modes):
            continue
        ul.append(f"| UDP {size} B: offered -b (Mb/s) that passed, per run | "
                  + " | ".join(series(m, t, "offered_mbps", 0) for m in modes) + " |")
        ul.append(f"| UDP {size} B: none passed down to (Mb/s) | "
                  + " | ".join(series(m, t, "below_mbps", 0) for m in modes) + " |")
        ul.append(f"| UDP {size} B: iperf3 runs | "
                  + " | ".join(series(m, t, "steps", 0) for m in modes) + " |")
    udp_max = ""
    if ul:
        udp_max = ("## Loss-bounded UDP search\n\n"
                   f"`iperf3 -u -b RATE -w {e.get('udp_max_window', '4M')} "
                   f"-t {e.get('udp_max_seconds', 3)}` (-w: socket buffers of both iperf3 ends), at most "
                   f"{e.get('udp_max_steps', 6)} runs per search: from the flood's receiver rate "
                   "down by 0.7 until the loss is under "
                   f"{e.get('udp_max_loss_percent', 1)}%, then halving the gap to the lowest "
                   "failing rate. The table columns give the receiver rate at the highest passing "
                   "rate (n/a: no rate passed).\n\n"
                   "| search | " + " | ".join(modes) + " |\n|---|" + "---:|" * len(modes) + "\n"
                   + "\n".join(ul) + "\n\n")

    failed = "\n".join(f"- {m}: " + "; ".join(v) for m, v in failures.items()) or "none"
    chart = base.rsplit("/", 1)[-1] + ".svg"
    print(table)
    print()
    print(target_table)
    return f"""# Throughput: ntmtun vs plain underlay vs WireGuard peers ({e['started'][:10]})

Produced by `perf/throughput.sh` (see perf/README.md). Medians of {e['repeats']} repetitions,
modes interleaved (each mode runs all its tests, then the next mode); bob -> alice in the `lan`
lab of scripts/lab.sh. `plain` = alice's underlay address {e['plain_target']} over veth + bridge
with default offloads; `plain_nooff` = the same with `ethtool -K tso off gso off gro off` on both
hosts' veths and bridge ports; `ntmtun*` = alice's virtual address {e['tunnel_target']}
(alice.ntm.internal) through ntmtun (`ntmtun_nooff`: NTMTUN_OFFLOAD=0; `ntmtun_io_X`: io = "X");
`wireguard_go` and `boringtun` = the same hosts through those peers (MTU {e['tunnel_mtu']},
overlay {e['peer_overlay']}).

- Machine: {e['cpus']} vCPU ({e['cpu']}, hypervisor {e['hypervisor'] or 'none'}), kernel {e['kernel']};
  iperf3 client, iperf3 server and both tunnel ends share the same {e['cpus']} cores.
- Load average (1/5/15 min) before the run: {e['loadavg_before']}, after: {e['loadavg_after']}. Run {e['started']} .. {e['finished']}.
- ntmtun commit {e['commit']}; {e['iperf3']}; iperf3 `-t {e['iperf3_seconds']}`; UDP `-u -b 0` (a flood:
  the receiver's figure counts); ping `-c 20 -i 0.05` and `-c 200 -i 0.002`.
- Nice value of the measured processes (tunnel ends, iperf3, ping): {e.get('nice', 0)} (`--nice`;
  0 = they compete with other jobs on equal terms).
- CPU s per Gbit: utime + stime of the tunnel processes at both ends (all threads) during the
  TCP x1 run, divided by the gigabits received.

![chart]({chart})

## Medians

{table}

## Ratios (ntmtun modes)

Throughput: higher is better; ping and CPU: lower is better.

{ratio_table}

## Targets

{target_table}

## Modes that failed

{failed}

{udp_max}## Where UDP packets were lost

{drops}

## Every sample (in repetition order)

{sample_table}
"""


if __name__ == "__main__":
    main()
