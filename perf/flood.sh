#!/usr/bin/env bash
# Throughput of an established tunnel while handshake initiations flood the node and the DC, as a
# ratio to no flood (docs/security.md, "DoS").
#
# Builds the `lan` lab of scripts/lab.sh under a fresh prefix, starts the DC and both nodes, brings
# the bob -> alice tunnel up, and adds a flooding host PREFIX-flood on the Internet segment
# (198.51.100.67). Then, interleaved and repeated (medians), iperf3 TCP bob -> alice's virtual
# address for -t SECONDS in each mode:
#   none         no flood
#   node_valid   initiations with a valid mac1 for alice's key at alice's data port
#   node_random  initiations with a random mac1 at alice's data port
#   dc_valid     registrations with a valid mac1 for the DC's key at the DC (7446)
# Every flood comes from random spoofed sources in 198.51.100.128/25 (perf/flood.py, a raw
# socket), so per-source rate limits alone would not hold it; RATE packets per second (default
# 20000), for the iperf3 run plus 2 s. Alice's and the DC's metrics are read before and after
# each run: the handshake counters (received, answered, cookie-replied, rate-limited, bad mac1)
# and the drop counters go into the results as per-run deltas.
#
# Writes perf/results/DATE-flood.md and .json and prints the table.
#
# Usage: sudo perf/flood.sh [options]
#   -n N          repetitions (default 3; medians over them)
#   -t SECONDS    iperf3 duration per run (default 5)
#   -r RATE       flood packets per second (default 20000)
#   -p PREFIX     lab prefix (default fl + random hex; ^[a-z][a-z0-9]{0,7}$)
#   -o DIR        results directory (default perf/results)
#   --no-build    do not run `cargo build --release` (use NTMTUN_BIN or target/release)
#
# Safety (shared/LAB.md): only the namespaces PREFIX-* (lab.sh's and PREFIX-flood, made here and
# removed by `lab.sh down`), only documentation addresses (flood.py refuses others), every
# command under `timeout`, every loop bounded, the flooder bounded in time and packets and
# started through `lab.sh spawn` (stopped by PID), the lab torn down on exit, error or Ctrl-C.
set -euo pipefail

ME=${0##*/}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB="$ROOT/scripts/lab.sh"

REPEATS=3
SECS=5
RATE=20000
PREFIX=
OUT_DIR="$ROOT/perf/results"
BUILD=1
PORT=5201
MODES=(none node_valid node_random dc_valid)
FLOOD_ADDR=198.51.100.67
DC_TARGET=198.51.100.10:7446

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
    -r) RATE=${2:-}; shift 2 ;;
    -p) PREFIX=${2:-}; shift 2 ;;
    -o) OUT_DIR=${2:-}; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) usage ;;
    *) usage ;;
    esac
done
[[ $REPEATS =~ ^[1-9][0-9]?$ ]] || die "-n must be 1-99, got '$REPEATS'"
[[ $SECS =~ ^[1-9][0-9]?$ ]] || die "-t must be 1-99 seconds, got '$SECS'"
[[ $RATE =~ ^[1-9][0-9]{0,5}$ ]] || die "-r must be 1-999999 packets per second, got '$RATE'"
if [[ -z $PREFIX ]]; then
    PREFIX="fl$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
    PREFIX=${PREFIX:0:8}
fi
[[ $PREFIX =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "invalid prefix '$PREFIX'"

[[ $EUID -eq 0 ]] || die "needs root (network namespaces, TUN devices): sudo $0"
for c in ip iperf3 jq python3 timeout dig curl; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' not found; run scripts/setup.sh"
done

cd "$ROOT"
WORK=$(mktemp -d /tmp/ntmtun-flood.XXXXXX)
SAMPLES="$WORK/samples.tsv" # rep mode metric value
: >"$SAMPLES"
LAB_UP=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ $LAB_UP -eq 1 ]]; then
        log "tearing down lab '$PREFIX'"
        timeout 60 "$LAB" down "$PREFIX" || log "warning: 'lab.sh down $PREFIX' failed; run it by hand"
    fi
    rm -rf -- "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    COMMIT="$COMMIT+dirty"
fi
if [[ $BUILD -eq 1 ]]; then
    if ! command -v cargo >/dev/null 2>&1 && [[ -f $HOME/.cargo/env ]]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    log "cargo build --release"
    timeout 1800 cargo build --release >&2 || die "cargo build --release failed"
fi
NTMTUN_BIN=$(realpath "${NTMTUN_BIN:-target/release/ntmtun}")
[[ -x $NTMTUN_BIN ]] || die "no ntmtun binary at $NTMTUN_BIN"
export NTMTUN_BIN

in_ns() { # HOST SECONDS CMD...
    local host=$1 t=$2
    shift 2
    timeout "$t" ip netns exec "$PREFIX-$host" "$@"
}

sample() { echo -e "$1\t$2\t$3\t$4" >>"$SAMPLES"; }

# ---------------------------------------------------------------------------------------------
# The lab, and the flooding host on the Internet segment.

log "building lab '$PREFIX' (scripts/lab.sh up lan $PREFIX; start)"
LAB_UP=1
timeout 120 "$LAB" up lan "$PREFIX" || die "lab.sh up failed"
timeout 120 "$LAB" start "$PREFIX" || die "lab.sh start failed"
RUN=/tmp/ntmtun-lab/$PREFIX

ip netns add "$PREFIX-flood"
ip -n "$PREFIX-flood" link set lo up
ip -n "$PREFIX-sw" link add flood type veth peer name eth0 netns "$PREFIX-flood"
ip -n "$PREFIX-sw" link set flood master br0
ip -n "$PREFIX-sw" link set flood up
ip -n "$PREFIX-flood" addr add "$FLOOD_ADDR/24" dev eth0
ip -n "$PREFIX-flood" link set eth0 up

VIP=$(in_ns bob 15 dig +short +time=2 +tries=3 alice.ntm.internal A | head -n1)
[[ $VIP =~ ^198\.1[89]\.[0-9]+\.[0-9]+$ ]] ||
    die "alice.ntm.internal did not resolve to a virtual address from bob (got '$VIP')"
ok=0
for ((i = 0; i < 20; i++)); do
    if in_ns bob 5 ping -q -c 1 -W 1 "$VIP" >/dev/null 2>&1; then
        ok=1
        break
    fi
    sleep 0.5
done
[[ $ok -eq 1 ]] || die "no ping through the tunnel to $VIP after 20 tries"
ALICE_EP=$(timeout 10 "$NTMTUN_BIN" status --socket "$RUN/bob.sock" --json |
    jq -r '.peers[] | select(.name == "alice") | .endpoint')
[[ $ALICE_EP =~ ^198\.51\.100\.11:[0-9]+$ ]] || die "alice's data endpoint from bob's status: '$ALICE_EP'"
ALICE_PUB=$(cat "$RUN/alice.pub")
DC_PUB=$(cat "$RUN/dc.pub")
log "tunnel up: alice $VIP at $ALICE_EP; flooding from $FLOOD_ADDR at $RATE/s"

# ---------------------------------------------------------------------------------------------
# Counters: alice's and the DC's metrics endpoints (127.0.0.1:9100 in their namespaces).

METRICS_RE='^ntmtun_(node_handshakes|node_cookies|node_dropped_packets|node_control_dropped|dc_handshakes|dc_rate_limited|dc_dropped)'
metrics() { # HOST -> "name{labels} value" lines of the counters we report
    in_ns "$1" 10 curl -s --max-time 5 http://127.0.0.1:9100/metrics |
        grep -E "$METRICS_RE" | sed 's/_total//' || true
}

record_deltas() { # REP MODE BEFORE_FILE AFTER_FILE PREFIX_LABEL
    python3 - "$@" <<'PY' >>"$SAMPLES"
import sys
rep, mode, before, after, who = sys.argv[1:6]
def read(p):
    d = {}
    for line in open(p):
        k, _, v = line.rpartition(" ")
        try:
            d[k] = float(v)
        except ValueError:
            pass
    return d
b, a = read(before), read(after)
for k in sorted(a):
    print(f"{rep}\t{mode}\t{who}:{k}\t{a[k] - b.get(k, 0):.0f}")
PY
}

# ---------------------------------------------------------------------------------------------
# One run: optional flood + iperf3.

RUN_NO=0
run_one() { # REP MODE
    local rep=$1 mode=$2 flood_args=() out="$WORK/iperf-$1-$2.json"
    RUN_NO=$((RUN_NO + 1))
    case $mode in
    none) ;;
    node_valid) flood_args=(--target "$ALICE_EP" --kind node --mac1 valid --pubkey "$ALICE_PUB") ;;
    node_random) flood_args=(--target "$ALICE_EP" --kind node --mac1 random) ;;
    dc_valid) flood_args=(--target "$DC_TARGET" --kind dc --mac1 valid --pubkey "$DC_PUB") ;;
    *) die "unknown mode $mode" ;;
    esac
    metrics alice >"$WORK/a0"
    metrics dc >"$WORK/d0"
    timeout 20 "$LAB" spawn "$PREFIX" alice "iperf3-$RUN_NO" iperf3 -s -1 -p "$PORT" --idle-timeout $((SECS + 60)) >/dev/null
    local i
    for ((i = 0; i < 50; i++)); do
        in_ns alice 5 ss -Htln "sport = :$PORT" | grep -q . && break
        sleep 0.1
    done
    local flood_name=
    if [[ ${#flood_args[@]} -gt 0 ]]; then
        flood_name="flood-$RUN_NO"
        timeout 20 "$LAB" spawn "$PREFIX" flood "$flood_name" python3 "$ROOT/perf/flood.py" \
            "${flood_args[@]}" --rate "$RATE" --seconds $((SECS + 2)) \
            --max-packets $((RATE * (SECS + 2))) >/dev/null
        sleep 1 # the flood is on before the measurement starts
    fi
    if ! in_ns bob $((SECS + 30)) iperf3 -c "$VIP" -p "$PORT" -t "$SECS" -J >"$out" 2>"$out.err"; then
        log "warning: iperf3 $mode (rep $rep) failed: $(head -c 300 "$out.err")"
    fi
    if [[ -n $flood_name ]]; then
        for ((i = 0; i < 100; i++)); do # flood.py ends on its own after SECS + 2 s
            [[ -s $RUN/$flood_name.out ]] && break
            sleep 0.1
        done
        timeout 20 "$LAB" stop "$PREFIX" "$flood_name" >/dev/null 2>&1 || true
        local fl
        fl=$(cat "$RUN/$flood_name.out" 2>/dev/null || true)
        [[ -n $fl ]] && sample "$rep" "$mode" flood_pps "$(jq -r '.pps' <<<"$fl")"
    fi
    timeout 20 "$LAB" stop "$PREFIX" "iperf3-$RUN_NO" >/dev/null 2>&1 || true
    local bps
    bps=$(jq -r '.end.sum_received.bits_per_second // empty' "$out" 2>/dev/null || true)
    [[ -n $bps ]] && sample "$rep" "$mode" tcp_gbps "$(python3 -c "print(f'{$bps/1e9:.4f}')")"
    metrics alice >"$WORK/a1"
    metrics dc >"$WORK/d1"
    record_deltas "$rep" "$mode" "$WORK/a0" "$WORK/a1" alice
    record_deltas "$rep" "$mode" "$WORK/d0" "$WORK/d1" dc
    log "rep $rep $mode: tcp $(grep -P "^$rep\t$mode\ttcp_gbps" "$SAMPLES" | cut -f4 || echo -) Gb/s"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for ((rep = 1; rep <= REPEATS; rep++)); do
    for mode in "${MODES[@]}"; do
        run_one "$rep" "$mode"
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# Results.

mkdir -p "$OUT_DIR"
STAMP=$(date -u +%Y-%m-%d-%H%M%S)
python3 - "$SAMPLES" "$OUT_DIR/$STAMP-flood" "$COMMIT" "$REPEATS" "$SECS" "$RATE" \
    "$LOAD_BEFORE" "$LOAD_AFTER" "$(nproc)" "$(uname -r)" <<'PY'
import json, statistics, sys
from collections import defaultdict
samples, base, commit, reps, secs, rate, lb, la, cpus, kernel = sys.argv[1:11]
modes = ["none", "node_valid", "node_random", "dc_valid"]
vals = defaultdict(lambda: defaultdict(list))
for line in open(samples):
    rep, mode, metric, v = line.rstrip("\n").split("\t")
    vals[mode][metric].append(float(v))
med = {m: {k: statistics.median(v) for k, v in vals[m].items()} for m in modes}
none = med["none"].get("tcp_gbps")
ratio = {m: (med[m].get("tcp_gbps") / none if none and med[m].get("tcp_gbps") else None) for m in modes}
doc = {"commit": commit, "repeats": int(reps), "iperf3_seconds": int(secs), "flood_rate": int(rate),
       "loadavg_before": lb, "loadavg_after": la, "cpus": int(cpus), "kernel": kernel,
       "medians": med, "ratio_to_no_flood": ratio,
       "samples": {m: {k: v for k, v in vals[m].items()} for m in modes}}
json.dump(doc, open(base + ".json", "w"), indent=1, sort_keys=True)
keys = ["alice:ntmtun_node_handshakes_received", "alice:ntmtun_node_handshakes_answered",
        "alice:ntmtun_node_handshakes_cookie_replied", "alice:ntmtun_node_handshakes_rate_limited",
        "alice:ntmtun_node_handshakes_bad_mac1",
        'alice:ntmtun_node_dropped_packets{reason="control_queue_full"}',
        "dc:ntmtun_dc_handshakes_received", "dc:ntmtun_dc_handshakes_answered",
        "dc:ntmtun_dc_handshakes_cookie_replied", "dc:ntmtun_dc_rate_limited"]
fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) and v < 100 else f"{v:.0f}")
out = [f"# Handshake flood vs tunnel throughput ({base.rsplit('/', 1)[-1]})", "",
       f"iperf3 TCP bob -> alice through the tunnel, `-t {secs}`, medians of {reps} interleaved runs; "
       f"flood {rate} initiations/s from spoofed sources in 198.51.100.128/25 (perf/flood.py). "
       f"ntmtun {commit}, {cpus} vCPUs shared by everything (iperf3 both ends, both nodes, the DC, "
       f"the flooder), kernel {kernel}, load average {lb} before, {la} after.", "",
       "| mode | TCP Gb/s | ratio to no flood | flood pps sent |", "|---|---:|---:|---:|"]
for m in modes:
    out.append(f"| {m} | {fmt(med[m].get('tcp_gbps'))} | {fmt(ratio[m])} | {fmt(med[m].get('flood_pps'))} |")
out += ["", "Counter deltas per run (medians):", "",
        "| counter | " + " | ".join(modes) + " |", "|---|" + "---:|" * len(modes)]
for k in keys:
    out.append(f"| `{k}` | " + " | ".join(fmt(med[m].get(k)) for m in modes) + " |")
open(base + ".md", "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
log "results: $OUT_DIR/$STAMP-flood.md (.json)"
