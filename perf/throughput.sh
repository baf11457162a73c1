#!/usr/bin/env bash
# Throughput and latency of the ntmtun tunnel against the plain underlay, in a network lab.
#
# Builds the `lan` lab of scripts/lab.sh (DC, alice, bob and a DNS server on one bridged segment,
# 198.51.100.0/24) under a fresh prefix, starts the DC and both nodes, and measures from bob to
# alice, interleaved (plain, plain with offloads off, tunnel, plain, ...) and repeated:
#   - iperf3 TCP, 1 stream, -t SECONDS: receiver throughput (and sender retransmits)
#   - iperf3 UDP flood, -u -b 0 -l 1392 (the largest datagram that fits the 1420-byte tunnel MTU
#     unfragmented): receiver throughput and loss
#   - ping -c 20 -i 0.05: average round-trip time (mostly thread and vCPU wake-up latency on an
#     idle VM), and ping -c 200 -i 0.002 ("ping_fast": threads stay warm, closer to the data-path
#     latency)
# against alice's underlay address 198.51.100.11 ("plain") and through the tunnel to
# alice.ntm.internal's virtual address ("tunnel"). "plain_nooff" is the plain underlay with
# `ethtool -K tso off gso off gro off` on both hosts' veths and their bridge ports: a per-packet
# baseline, since the tunnel cannot use the kernel's segmentation offloads yet.
#
# Writes perf/results/DATE-throughput.md and .json (medians, tunnel/plain ratios, every sample,
# and where tunnel packets were dropped) and prints the table.
#
# Usage: sudo perf/throughput.sh [options]
#   -n N                 repetitions (default 3; medians over them)
#   -t SECONDS           iperf3 duration per run (default 5)
#   -p PREFIX            lab prefix (default pf + random hex; ^[a-z][a-z0-9]{0,7}$)
#   -o DIR               results directory (default perf/results)
#   --no-offload-baseline   skip the plain_nooff mode
#   --no-build           do not run `cargo build --release` (use NTMTUN_BIN or target/release)
#   --rev REV            measure a committed revision instead of the working tree: `git archive
#                        REV` into a temporary directory, build it there (target dir
#                        target/perf-rev, kept between runs) and use that tree's scripts/lab.sh
#
# Safety (shared/LAB.md): only the namespaces PREFIX-* that lab.sh creates here, only
# documentation addresses, every command under `timeout`, every loop bounded, iperf3 servers
# started one-off (-1) and stopped by PID, and the lab torn down on exit, error or Ctrl-C.
set -euo pipefail

ME=${0##*/}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB="$ROOT/scripts/lab.sh"

REPEATS=3
SECS=5
PREFIX=
OUT_DIR="$ROOT/perf/results"
OFFLOAD_BASELINE=1
BUILD=1
REV=

PLAIN_TARGET=198.51.100.11 # alice's underlay address in the lan topology
PORT=5201
UDP_LEN=1392

die() {
    echo "$ME: error: $*" >&2
    exit 1
}
log() { echo "$ME: $*" >&2; }

usage() {
    sed -n '/^# Usage:/,/^# Safety/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [[ $# -gt 0 ]]; do
    case $1 in
    -n) REPEATS=${2:-}; shift 2 ;;
    -t) SECS=${2:-}; shift 2 ;;
    -p) PREFIX=${2:-}; shift 2 ;;
    -o) OUT_DIR=${2:-}; shift 2 ;;
    --no-offload-baseline) OFFLOAD_BASELINE=0; shift ;;
    --no-build) BUILD=0; shift ;;
    --rev) REV=${2:-}; shift 2 ;;
    -h | --help) usage ;;
    *) usage ;;
    esac
done
[[ $REPEATS =~ ^[1-9][0-9]?$ ]] || die "-n must be 1-99"
[[ $SECS =~ ^[1-9][0-9]?$ ]] || die "-t must be 1-99 seconds"
if [[ -z $PREFIX ]]; then
    PREFIX="pf$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
    PREFIX=${PREFIX:0:8}
fi
[[ $PREFIX =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "invalid prefix '$PREFIX'"

[[ $EUID -eq 0 ]] || die "needs root (network namespaces, TUN devices): sudo $0"
for c in ip iperf3 ping jq python3 ethtool timeout dig ss; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' not found; run scripts/setup.sh"
done
[[ -x $LAB ]] || die "$LAB not found"

cd "$ROOT"
WORK=$(mktemp -d /tmp/ntmtun-perf.XXXXXX)
SAMPLES="$WORK/samples.tsv" # rep mode test metric value
: >"$SAMPLES"
LAB_UP=0
SERVER_NAME=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ $LAB_UP -eq 1 ]]; then
        if [[ -n $SERVER_NAME ]]; then
            timeout 20 "$LAB" stop "$PREFIX" "$SERVER_NAME" >/dev/null 2>&1 || true
        fi
        log "tearing down lab '$PREFIX'"
        timeout 60 "$LAB" down "$PREFIX" || log "warning: 'lab.sh down $PREFIX' failed; run it by hand"
    fi
    rm -rf -- "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -f $HOME/.cargo/env ]]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found (or pass --no-build)"
}

if [[ -n $REV ]]; then
    COMMIT=$(git rev-parse --short "$REV^{commit}" 2>/dev/null) || die "no such revision '$REV'"
    mkdir "$WORK/src"
    timeout 60 git archive "$COMMIT" | tar -x -C "$WORK/src" || die "git archive $COMMIT failed"
    LAB="$WORK/src/scripts/lab.sh"
    [[ -x $LAB ]] || die "revision $COMMIT has no scripts/lab.sh"
    ensure_cargo
    log "cargo build --release of revision $COMMIT (target dir target/perf-rev)"
    CARGO_TARGET_DIR="$ROOT/target/perf-rev" timeout 1800 \
        cargo build --release --manifest-path "$WORK/src/Cargo.toml" >&2 ||
        die "cargo build --release of $COMMIT failed"
    NTMTUN_BIN="$ROOT/target/perf-rev/release/ntmtun"
else
    COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
        COMMIT="$COMMIT+dirty"
    fi
    if [[ $BUILD -eq 1 ]]; then
        ensure_cargo
        log "cargo build --release"
        timeout 1800 cargo build --release >&2 ||
            die "cargo build --release failed (work in progress? try --rev HEAD)"
    fi
fi
NTMTUN_BIN=$(realpath "${NTMTUN_BIN:-target/release/ntmtun}")
[[ -x $NTMTUN_BIN ]] || die "no ntmtun binary at $NTMTUN_BIN"
export NTMTUN_BIN

in_ns() { # HOST SECONDS CMD...: a bounded command in PREFIX-HOST
    local host=$1 t=$2
    shift 2
    timeout "$t" ip netns exec "$PREFIX-$host" "$@"
}

sample() { echo -e "$1\t$2\t$3\t$4\t$5" >>"$SAMPLES"; }

# ---------------------------------------------------------------------------------------------
# The lab

log "building lab '$PREFIX' (scripts/lab.sh up lan $PREFIX; start)"
LAB_UP=1
timeout 120 "$LAB" up lan "$PREFIX" || die "lab.sh up failed"
timeout 120 "$LAB" start "$PREFIX" || die "lab.sh start failed"

VIP=$(in_ns bob 15 dig +short +time=2 +tries=3 alice.ntm.internal A | head -n1)
[[ $VIP =~ ^198\.1[89]\.[0-9]+\.[0-9]+$ ]] ||
    die "alice.ntm.internal did not resolve to a virtual address from bob (got '$VIP')"
log "alice's virtual address: $VIP"

# The first packets set up the tunnel; wait (bounded) until it carries pings.
ok=0
for ((i = 0; i < 20; i++)); do
    if in_ns bob 5 ping -q -c 1 -W 1 "$VIP" >/dev/null 2>&1; then
        ok=1
        break
    fi
    sleep 0.5
done
[[ $ok -eq 1 ]] || die "no ping through the tunnel to $VIP after 20 tries"

# Offload state of the underlay veths (both ends of alice's and bob's links), for plain_nooff.
OFF_IFS=("alice eth0" "bob eth0" "sw alice" "sw bob")
declare -A OFF_ORIG=()
for spec in "${OFF_IFS[@]}"; do
    read -r ns dev <<<"$spec"
    OFF_ORIG[$spec]=$(in_ns "$ns" 10 ethtool -k "$dev" | awk -F': ' '
        $1 == "tcp-segmentation-offload" {t = $2}
        $1 == "generic-segmentation-offload" {g = $2}
        $1 == "generic-receive-offload" {r = $2}
        END {sub(/ .*/, "", t); sub(/ .*/, "", g); sub(/ .*/, "", r); print t, g, r}')
done

offloads_off() {
    local spec ns dev
    for spec in "${OFF_IFS[@]}"; do
        read -r ns dev <<<"$spec"
        in_ns "$ns" 10 ethtool -K "$dev" tso off gso off gro off 2>/dev/null || true
    done
}

offloads_restore() {
    local spec ns dev t g r
    for spec in "${OFF_IFS[@]}"; do
        read -r ns dev <<<"$spec"
        read -r t g r <<<"${OFF_ORIG[$spec]}"
        in_ns "$ns" 10 ethtool -K "$dev" tso "${t:-on}" gso "${g:-on}" gro "${r:-off}" 2>/dev/null || true
    done
}

# ---------------------------------------------------------------------------------------------
# Counters: where packets are dropped.

udp_counter() { # HOST FIELD -> value of Udp FIELD in /proc/net/snmp of the namespace
    # shellcheck disable=SC2016 # awk code
    in_ns "$1" 10 awk -v f="$2" '$1 == "Udp:" {
        if (!hdr) { for (i = 2; i <= NF; i++) col[$i] = i; hdr = 1 } else { print $col[f]; exit } }' \
        /proc/net/snmp
}

link_stat() { # HOST DEV STAT
    in_ns "$1" 10 cat "/sys/class/net/$2/statistics/$3" 2>/dev/null || echo 0
}

counters() { # -> "alice_rcvbuf bob_sndbuf bob_tun_tx_dropped alice_eth0_rx_dropped"
    echo "$(udp_counter alice RcvbufErrors) $(udp_counter bob SndbufErrors)" \
        "$(link_stat bob ntm0 tx_dropped) $(link_stat alice eth0 rx_dropped)"
}

record_drops() { # REP MODE TEST BEFORE AFTER
    local -a b a
    read -r -a b <<<"$4"
    read -r -a a <<<"$5"
    sample "$1" "$2" "$3" alice_udp_rcvbuf_errors $((a[0] - b[0]))
    sample "$1" "$2" "$3" bob_udp_sndbuf_errors $((a[1] - b[1]))
    sample "$1" "$2" "$3" bob_tun_tx_dropped $((a[2] - b[2]))
    sample "$1" "$2" "$3" alice_eth0_rx_dropped $((a[3] - b[3]))
}

# ---------------------------------------------------------------------------------------------
# One measurement.

RUN_NO=0

start_server() { # -> sets SERVER_NAME; iperf3 one-off server on alice, stopped by PID later
    RUN_NO=$((RUN_NO + 1))
    SERVER_NAME="iperf3-$RUN_NO"
    "$LAB" spawn "$PREFIX" alice "$SERVER_NAME" \
        iperf3 -s -1 -p "$PORT" --idle-timeout $((SECS + 60)) >/dev/null
    local i
    for ((i = 0; i < 50; i++)); do
        if in_ns alice 5 ss -Hltn "sport = :$PORT" | grep -q LISTEN; then
            return 0
        fi
        sleep 0.1
    done
    die "iperf3 server did not listen on alice:$PORT within 5 s"
}

stop_server() {
    if [[ -n $SERVER_NAME ]]; then
        timeout 20 "$LAB" stop "$PREFIX" "$SERVER_NAME" >/dev/null 2>&1 || true
        SERVER_NAME=
    fi
}

run_iperf() { # REP MODE TEST TARGET
    local rep=$1 mode=$2 test=$3 target=$4 out="$WORK/$1-$2-$3.json"
    local -a extra=()
    [[ $test == udp ]] && extra=(-u -b 0 -l "$UDP_LEN")
    local before after
    before=$(counters)
    start_server
    if ! in_ns bob $((SECS + 30)) iperf3 -c "$target" -p "$PORT" -t "$SECS" \
        --connect-timeout 3000 -J "${extra[@]}" >"$out" 2>"$out.err"; then
        log "warning: iperf3 $test $mode (rep $rep) failed: $(jq -r '.error // empty' "$out" 2>/dev/null) $(head -c 300 "$out.err")"
        stop_server
        return 0
    fi
    stop_server
    after=$(counters)
    sample "$rep" "$mode" "$test" rx_mbps "$(jq '.end.sum_received.bits_per_second / 1e6' "$out")"
    sample "$rep" "$mode" "$test" tx_mbps "$(jq '.end.sum_sent.bits_per_second / 1e6' "$out")"
    if [[ $test == tcp ]]; then
        sample "$rep" "$mode" "$test" retransmits "$(jq '.end.sum_sent.retransmits // 0' "$out")"
    else
        sample "$rep" "$mode" "$test" loss_percent "$(jq '.end.sum_received.lost_percent' "$out")"
    fi
    record_drops "$rep" "$mode" "$test" "$before" "$after"
    printf '%s: rep %d %-11s %-4s %10.1f Mb/s\n' "$ME" "$rep" "$mode" "$test" \
        "$(jq '.end.sum_received.bits_per_second / 1e6' "$out")" >&2
}

run_ping() { # REP MODE TEST TARGET COUNT INTERVAL
    local rep=$1 mode=$2 test=$3 target=$4 count=$5 interval=$6 out
    if ! out=$(in_ns bob 30 ping -q -c "$count" -i "$interval" -W 2 "$target" 2>&1); then
        log "warning: $test $mode (rep $rep) failed: $out"
        return 0
    fi
    # rtt min/avg/max/mdev = 0.013/0.070/0.095/0.025 ms
    local rtt
    rtt=$(awk -F' = ' '/^rtt/ {split($2, v, "/"); print v[1] * 1000, v[2] * 1000, v[3] * 1000}' <<<"$out")
    read -r mn avg mx <<<"$rtt"
    [[ -n ${avg:-} ]] || {
        log "warning: no rtt line from $test $mode: $out"
        return 0
    }
    sample "$rep" "$mode" "$test" rtt_avg_us "$avg"
    sample "$rep" "$mode" "$test" rtt_min_us "$mn"
    sample "$rep" "$mode" "$test" rtt_max_us "$mx"
    sample "$rep" "$mode" "$test" loss_percent "$(sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p' <<<"$out")"
    printf '%s: rep %d %-11s %-9s %7.1f us avg\n' "$ME" "$rep" "$mode" "$test" "$avg" >&2
}

MODES=(plain)
[[ $OFFLOAD_BASELINE -eq 1 ]] && MODES+=(plain_nooff)
MODES+=(tunnel)

target_of() { [[ $1 == tunnel ]] && echo "$VIP" || echo "$PLAIN_TARGET"; }

measure() { # REP MODE TEST
    local target
    target=$(target_of "$2")
    [[ $2 == plain_nooff ]] && offloads_off
    case $3 in
    tcp | udp) run_iperf "$1" "$2" "$3" "$target" ;;
    ping) run_ping "$1" "$2" ping "$target" 20 0.05 ;;
    ping_fast) run_ping "$1" "$2" ping_fast "$target" 200 0.002 ;;
    esac
    [[ $2 == plain_nooff ]] && offloads_restore
    sleep 1 # let queues drain between runs
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u +%FT%TZ)
log "measuring: $REPEATS repetitions x (tcp, udp, ping, ping_fast) x (${MODES[*]}), iperf3 -t $SECS"
for ((rep = 1; rep <= REPEATS; rep++)); do
    for test in tcp udp ping ping_fast; do
        for mode in "${MODES[@]}"; do
            measure "$rep" "$mode" "$test"
        done
    done
done
FINISHED=$(date -u +%FT%TZ)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# Node-side view after the runs (peer path, packet counters).
STATUS_BOB=$(in_ns bob 10 "$NTMTUN_BIN" status --socket "/tmp/ntmtun-lab/$PREFIX/bob.sock" --json 2>/dev/null |
    jq -c . 2>/dev/null || true)
[[ -n $STATUS_BOB ]] || STATUS_BOB='{}'

# ---------------------------------------------------------------------------------------------
# Report

mkdir -p "$OUT_DIR"
DAY=$(date -u +%F)
BASE="$OUT_DIR/$DAY-throughput"
if [[ -e $BASE.md || -e $BASE.json ]]; then
    BASE="$OUT_DIR/$DAY-$(date -u +%H%M%S)-throughput"
fi

ENV_JSON=$(jq -n \
    --arg started "$STARTED" --arg finished "$FINISHED" \
    --arg kernel "$(uname -r)" --arg cpus "$(nproc)" \
    --arg cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
    --arg hyper "$(lscpu 2>/dev/null | awk -F': *' '/Hypervisor vendor/ {print $2}')" \
    --arg load "$LOAD_BEFORE" --arg load_after "$LOAD_AFTER" --arg commit "$COMMIT" \
    --arg iperf "$(iperf3 --version | head -n1)" --arg bin "$NTMTUN_BIN" \
    --arg prefix "$PREFIX" --arg vip "$VIP" \
    --argjson repeats "$REPEATS" --argjson secs "$SECS" --argjson udp_len "$UDP_LEN" \
    --argjson status "$STATUS_BOB" \
    '{started: $started, finished: $finished, kernel: $kernel, cpus: ($cpus | tonumber),
      cpu: $cpu, hypervisor: $hyper, loadavg_before: $load, loadavg_after: $load_after, commit: $commit, iperf3: $iperf,
      ntmtun_bin: $bin, lab_prefix: $prefix, repeats: $repeats, iperf3_seconds: $secs,
      udp_datagram_bytes: $udp_len, plain_target: "198.51.100.11", tunnel_target: $vip,
      bob_status_after: $status}')

python3 - "$SAMPLES" "$BASE" "$ENV_JSON" <<'PY'
import json, statistics, sys
from collections import defaultdict

samples_path, base, env = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
samples = defaultdict(list)  # (mode, test, metric) -> [values in rep order]
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

def med(mode, test, metric):
    v = samples.get((mode, test, metric))
    return statistics.median(v) if v else None

medians = defaultdict(dict)
for (mode, test, metric), v in samples.items():
    medians[mode][f"{test}.{metric}"] = statistics.median(v)

def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b

ratios = {}
for base_mode in [m for m in modes if m != "tunnel"]:
    ratios[f"tunnel/{base_mode}"] = {
        "tcp.rx_mbps": ratio(med("tunnel", "tcp", "rx_mbps"), med(base_mode, "tcp", "rx_mbps")),
        "udp.rx_mbps": ratio(med("tunnel", "udp", "rx_mbps"), med(base_mode, "udp", "rx_mbps")),
        "ping.rtt_avg_us": ratio(med("tunnel", "ping", "rtt_avg_us"), med(base_mode, "ping", "rtt_avg_us")),
        "ping_fast.rtt_avg_us": ratio(med("tunnel", "ping_fast", "rtt_avg_us"), med(base_mode, "ping_fast", "rtt_avg_us")),
    }

out = {
    "environment": env,
    "modes": modes,
    "medians": medians,
    "ratios": ratios,
    "samples": {f"{m}.{t}.{k}": v for (m, t, k), v in sorted(samples.items())},
}
with open(base + ".json", "w") as f:
    json.dump(out, f, indent=2)
    f.write("\n")

def fmt(x, nd=1):
    return "n/a" if x is None else f"{x:,.{nd}f}"

def fr(x):
    return "n/a" if x is None else f"{x:.3f}"

rows = [
    ("TCP, 1 stream, receiver (Mb/s)", "tcp", "rx_mbps", 0),
    ("TCP retransmits (sender)", "tcp", "retransmits", 0),
    ("UDP -b 0 -l 1392, receiver (Mb/s)", "udp", "rx_mbps", 0),
    ("UDP offered by sender (Mb/s)", "udp", "tx_mbps", 0),
    ("UDP loss (%)", "udp", "loss_percent", 1),
    ("ping -i 0.05 avg RTT (us)", "ping", "rtt_avg_us", 0),
    ("ping -i 0.05 min RTT (us)", "ping", "rtt_min_us", 0),
    ("ping -i 0.05 max RTT (us)", "ping", "rtt_max_us", 0),
    ("ping -i 0.002 avg RTT (us)", "ping_fast", "rtt_avg_us", 0),
    ("ping -i 0.002 min RTT (us)", "ping_fast", "rtt_min_us", 0),
]
hdr = "| metric | " + " | ".join(modes) + " | " + " | ".join(ratios) + " |"
sep = "|---|" + "---:|" * (len(modes) + len(ratios))
lines = [hdr, sep]
for label, test, metric, nd in rows:
    cells = [fmt(med(m, test, metric), nd) for m in modes]
    rcells = []
    for key in ratios:
        k = f"{test}.{metric}"
        rcells.append(fr(ratios[key].get(k)) if k in ratios[key] else "")
    lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(rcells) + " |")
table = "\n".join(lines)

drop_rows = [
    ("alice: UDP receive-buffer drops (RcvbufErrors)", "alice_udp_rcvbuf_errors"),
    ("bob: UDP send-buffer errors (SndbufErrors)", "bob_udp_sndbuf_errors"),
    ("bob: ntm0 tx_dropped (TUN queue full: worker did not read in time)", "bob_tun_tx_dropped"),
    ("alice: eth0 rx_dropped", "alice_eth0_rx_dropped"),
]
dl = ["| counter (median per UDP run) | " + " | ".join(modes) + " |", "|---|" + "---:|" * len(modes)]
for label, metric in drop_rows:
    dl.append(f"| {label} | " + " | ".join(fmt(med(m, "udp", metric), 0) for m in modes) + " |")
drops = "\n".join(dl)

def series(m, t, k, nd):
    v = samples.get((m, t, k), [])
    return ", ".join(fmt(x, nd) for x in v) or "n/a"

sl = ["| run | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
for label, test, metric, nd in [rows[0], rows[2], rows[4], rows[5], rows[8]]:
    sl.append(f"| {label} | " + " | ".join(series(m, test, metric, nd) for m in modes) + " |")
sample_table = "\n".join(sl)

e = env
md = f"""# Throughput: ntmtun tunnel vs plain underlay ({e['started'][:10]})

Produced by `perf/throughput.sh` (see perf/README.md). Medians of {e['repeats']} interleaved
repetitions; bob -> alice in the `lan` lab of scripts/lab.sh. `plain` = alice's underlay address
{e['plain_target']} over veth + bridge with default offloads; `plain_nooff` = the same with
`ethtool -K tso off gso off gro off` on both hosts' veths and bridge ports; `tunnel` = alice's
virtual address {e['tunnel_target']} (alice.ntm.internal) through ntmtun.

- Machine: {e['cpus']} vCPU ({e['cpu']}, hypervisor {e['hypervisor'] or 'none'}), kernel {e['kernel']};
  iperf3 client, iperf3 server and both tunnel ends share the same {e['cpus']} cores.
- Load average (1/5/15 min) before the run: {e['loadavg_before']}, after: {e['loadavg_after']}. Run {e['started']} .. {e['finished']}.
- ntmtun commit {e['commit']}; {e['iperf3']}; iperf3 `-t {e['iperf3_seconds']}`; UDP datagrams
  of {e['udp_datagram_bytes']} bytes (`-u -b 0`, a flood: the receiver's figure counts);
  ping `-c 20 -i 0.05` (on an idle 2-vCPU VM this is mostly thread and vCPU wake-up latency)
  and `-c 200 -i 0.002` (threads stay warm: closer to the data path's own latency).

## Medians

{table}

## Where UDP packets were lost

{drops}

## Every sample (in repetition order)

{sample_table}
"""
with open(base + ".md", "w") as f:
    f.write(md)
print(table)
print()
print(drops)
PY

log "wrote $BASE.md and $BASE.json"
