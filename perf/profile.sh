#!/usr/bin/env bash
# Where ntmtun's cycles go: flame graphs of both nodes under load, the paper's per-packet time
# split for a small packet, and callgrind instruction counts of the seal/open path.
#
#   flame      the `lan` lab, iperf3 TCP (1 stream; --flame-load udp: 1400-byte UDP datagrams at
#              --flame-rate) bob -> alice through the tunnel; `perf record
#              -e cpu-clock --call-graph dwarf` of bob's node (sender) and alice's node
#              (receiver), separately (this guest has no hardware PMU: cpu-clock sampling);
#              flame graphs (inferno) and the top symbols
#   paper      the paper's second table: a UDP flow of small datagrams (-l 47) at a known rate
#              bob -> alice; cpu-clock samples of both nodes split by symbol into TUN read,
#              processing, crypto, UDP send (sender) and UDP receive, crypto, processing, TUN
#              write (receiver) (perf/categories.py), divided by the packets the TUN devices
#              counted: time per packet in each part, with nothing compiled in
#   callgrind  valgrind --tool=callgrind of the criterion benches encapsulate/seal and
#              decapsulate/open (benches/dataplane.rs) at 64 and 1400 bytes: instructions per
#              packet (repeatable on a noisy machine)
#
# Writes perf/results/DATE-profile.md (and -flame-sender.svg, -flame-receiver.svg,
# -paper.json, -callgrind.txt) and prints the summary.
#
# Usage: sudo perf/profile.sh [options] [flame] [paper] [callgrind]   (default: all three)
#   -t SECONDS     recording time per run (default 5)
#   --rate PPS     packet rate of the paper run (default 10000)
#   --len BYTES    UDP payload of the paper run (default 47, the paper's)
#   --flame-load tcp|udp   the flame graphs' load (default tcp)
#   --flame-rate MBPS      the UDP load's iperf3 -b in Mb/s (default 0: a flood)
#   -p PREFIX      lab prefix (default pp + random hex)
#   -o DIR         results directory (default perf/results)
#   --nice N       run the nodes and iperf3 at nice N (e.g. -10, ahead of other jobs)
#   --no-build     use target/profiling/ntmtun (or NTMTUN_BIN) as it is
#
# Builds with `cargo build --profile profiling` (Cargo.toml: the release build with line tables;
# the release binary users get has none, and perf's DWARF call graphs and callgrind need them).
#
# Installs what it needs: linux-perf and valgrind (apt-get), inferno (cargo install --locked
# into target/perf-tools, once).
#
# Safety (shared/LAB.md): only the namespaces PREFIX-* that lab.sh creates, every command under
# `timeout`, iperf3 started through `lab.sh spawn` and stopped by PID, perf attached to the
# nodes' PIDs only, the lab torn down on exit, error or Ctrl-C.
set -euo pipefail

ME=${0##*/}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB="$ROOT/scripts/lab.sh"
# shellcheck source=perf/lib.sh
. "$ROOT/perf/lib.sh"

SECS=5
RATE=10000
LEN=47
PREFIX=
OUT_DIR="$ROOT/perf/results"
BUILD=1
PARTS=()
FLAME_LOAD=tcp
FLAME_RATE=0

usage() {
    sed -n '/^# Usage:/,/^# Installs/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [[ $# -gt 0 ]]; do
    case $1 in
    -t) SECS=${2:-}; shift 2 ;;
    --rate) RATE=${2:-}; shift 2 ;;
    --len) LEN=${2:-}; shift 2 ;;
    --flame-load) FLAME_LOAD=${2:-}; shift 2 ;;
    --flame-rate) FLAME_RATE=${2:-}; shift 2 ;;
    -p) PREFIX=${2:-}; shift 2 ;;
    -o) OUT_DIR=${2:-}; shift 2 ;;
    --nice) NICE=${2:-}; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    flame | paper | callgrind) PARTS+=("$1"); shift ;;
    -h | --help) usage ;;
    *) usage ;;
    esac
done
[[ ${#PARTS[@]} -gt 0 ]] || PARTS=(flame paper callgrind)
[[ $SECS =~ ^[1-9][0-9]?$ ]] || die "-t must be 1-99 seconds"
[[ $RATE =~ ^[1-9][0-9]{2,6}$ ]] || die "--rate must be 100-9999999 packets/s"
[[ $LEN =~ ^[1-9][0-9]{1,3}$ && $LEN -ge 16 && $LEN -le 1404 ]] || die "--len must be 16-1404 bytes"
[[ $FLAME_LOAD == tcp || $FLAME_LOAD == udp ]] || die "--flame-load must be tcp or udp"
[[ $FLAME_RATE =~ ^[0-9]{1,6}$ ]] || die "--flame-rate must be 0-999999 Mb/s"
[[ $NICE =~ ^-?[0-9]{1,2}$ && $NICE -ge -20 && $NICE -le 19 ]] || die "--nice must be -20..19"
set_nice "$NICE"
[[ -n $PREFIX ]] || PREFIX=$(random_prefix pp)
[[ $PREFIX =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "invalid prefix '$PREFIX'"
[[ $EUID -eq 0 ]] || die "needs root (network namespaces, perf on other processes): sudo $0"
cd "$ROOT"
has_part() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }

WORK=$(mktemp -d /tmp/ntmtun-profile.XXXXXX)
trap 'trap - EXIT INT TERM; perf_cleanup' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_apt ip:iproute2 iperf3:iperf3 jq:jq python3:python3 dig:dnsutils ss:iproute2 \
    dnsmasq:dnsmasq perf:linux-perf valgrind:valgrind || die "tools missing (see above)"
if has_part flame; then
    COLLAPSE=$(ensure_cargo_tool inferno inferno-collapse-perf) || die "inferno not available"
    FLAMEGRAPH=$TOOLS_ROOT/bin/inferno-flamegraph
fi

mkdir -p "$OUT_DIR"
BASE="$OUT_DIR/$(date -u +%F)-profile"
[[ -e $BASE.md ]] && BASE="$OUT_DIR/$(date -u +%F-%H%M%S)-profile"
REPORT="$WORK/report.md"
: >"$REPORT"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

if has_part flame || has_part paper; then
    build_ntmtun "$BUILD" "" profiling
    lab_start
    tunnel_ready || die "the tunnel does not carry pings"
    SENDER=$(node_pid bob)
    RECEIVER=$(node_pid alice)
    renice_pids "$SENDER" "$RECEIVER"
    log "tunnel up: alice $VIP; sender (bob) pid $SENDER, receiver (alice) pid $RECEIVER (nice $NICE)"
fi

node_status() { # HOST -> the node's status JSON
    in_ns "$1" 10 "$NTMTUN_BIN" status --socket "$RUN_DIR/$1.sock" --json 2>/dev/null || echo '{}'
}

# -> "SENT RECEIVED": data packets bob's node sealed for alice and alice's node opened from bob
# (the nodes' own per-peer counters: one per record, whatever the offloads coalesced)
tunnel_packets() {
    local tx rx
    tx=$(node_status bob | jq '[.peers[]? | select(.name == "alice") | .tx_packets] | add // 0')
    rx=$(node_status alice | jq '[.peers[]? | select(.name == "bob") | .rx_packets] | add // 0')
    echo "$tx $rx"
}

# Record both nodes for SECS while CLIENT (iperf3 arguments) runs from bob: WORK/NAME-{bob,alice}.data
record_under_load() { # NAME PERF_ARGS... -- IPERF_ARGS...
    local name=$1 h
    shift
    local -a pargs=() iargs=()
    while [[ $# -gt 0 && $1 != -- ]]; do pargs+=("$1"); shift; done
    shift
    iargs=("$@")
    start_server
    "$LAB" spawn "$PREFIX" bob "client-$name" "${NICE_CMD[@]}" iperf3 -c "$VIP" -p "$PORT" -t $((SECS + 2)) \
        --connect-timeout 3000 -J "${iargs[@]}" >/dev/null
    sleep 1 # past the connection set-up
    local -a rec=()
    PACKETS_BEFORE=$(tunnel_packets)
    for h in bob alice; do
        timeout $((SECS + 60)) perf record -q "${pargs[@]}" -p "$(node_pid "$h")" \
            -o "$WORK/$name-$h.data" -- sleep "$SECS" >"$WORK/$name-$h.perf.log" 2>&1 &
        rec+=($!)
    done
    wait "${rec[@]}" || log "warning: perf record ($name) exited non-zero: $(tail -c 300 "$WORK/$name-bob.perf.log")"
    PACKETS_AFTER=$(tunnel_packets)
    local i
    for ((i = 0; i < 100; i++)); do # bounded: the client ends by itself after SECS + 2
        [[ -s /tmp/ntmtun-lab/$PREFIX/client-$name.out ]] && break
        sleep 0.1
    done
    CLIENT_JSON=/tmp/ntmtun-lab/$PREFIX/client-$name.out
    cp "$CLIENT_JSON" "$WORK/$name-client.json" 2>/dev/null || true
    timeout 20 "$LAB" stop "$PREFIX" "client-$name" >/dev/null 2>&1 || true
    stop_server
}

# ---------------------------------------------------------------------------------------------
if has_part flame; then
    if [[ $FLAME_LOAD == udp ]]; then
        load_args=(-u -l 1400 -b "${FLAME_RATE}M")
        load_what="iperf3 UDP, 1400-byte datagrams at -b ${FLAME_RATE}M (0: a flood)"
        load_name="UDP"
    else
        load_args=(-P 1)
        load_what="iperf3 TCP, 1 stream"
        load_name="TCP"
    fi
    log "flame: $load_what through the tunnel, perf record -e cpu-clock --call-graph dwarf, $SECS s"
    record_under_load flame -e cpu-clock -F 499 --call-graph dwarf,16384 -- "${load_args[@]}"
    rx=$(jq -r '.end.sum_received.bits_per_second / 1e6 | floor' "$WORK/flame-client.json" 2>/dev/null || echo "?")
    loss=$(jq -r '.end.sum_received.lost_percent // .end.sum.lost_percent // "n/a"' "$WORK/flame-client.json" 2>/dev/null || echo "?")
    {
        echo "## Flame graphs under $load_name load"
        echo
        echo "$load_what, bob -> alice through the tunnel: $rx Mb/s received while recording$([[ $FLAME_LOAD == udp ]] && echo " (loss $loss %)")."
        echo "\`perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -p NODE -- sleep $SECS\`."
        echo
    } >>"$REPORT"
    for h in bob alice; do
        role=$([[ $h == bob ]] && echo sender || echo receiver)
        timeout 600 perf script -i "$WORK/flame-$h.data" 2>/dev/null >"$WORK/flame-$h.script" || true
        "$COLLAPSE" <"$WORK/flame-$h.script" >"$WORK/flame-$h.folded" 2>/dev/null || true
        "$FLAMEGRAPH" --title "ntmtun $role ($h) under iperf3 $load_name, cpu-clock" \
            <"$WORK/flame-$h.folded" >"$BASE-flame-$role.svg" 2>/dev/null ||
            log "warning: no flame graph for $h (no samples?)"
        {
            echo "### $role ($h): $(basename "$BASE")-flame-$role.svg"
            echo
            echo "Self time by symbol (top 15, % of the node's samples):"
            echo
            echo '```'
            timeout 300 perf report -i "$WORK/flame-$h.data" --no-children --sort dso,sym --stdio \
                -g none --percent-limit 1 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 15 || true
            echo '```'
            echo
            echo "Split by category (perf/categories.py, % of the node's CPU time):"
            echo
            python3 "$ROOT/perf/categories.py" 1 <"$WORK/flame-$h.script" |
                jq -r '.total_ns as $t | .categories | to_entries | sort_by(-.value.ns) |
                    map("- \(.key): \(if $t > 0 then (.value.ns * 1000 / $t | floor) / 10 else 0 end)%") | .[]'
            echo
        } >>"$REPORT"
    done
fi

# ---------------------------------------------------------------------------------------------
if has_part paper; then
    bps=$((RATE * LEN * 8))
    log "paper: UDP -l $LEN at $RATE packets/s ($bps b/s), cpu-clock every 10 us of CPU, $SECS s"
    record_under_load paper -e cpu-clock -c 10000 --call-graph dwarf,8192 -- -u -l "$LEN" -b "$bps"
    read -r tx0 rx0 <<<"$PACKETS_BEFORE"
    read -r tx1 rx1 <<<"$PACKETS_AFTER"
    b_pk=$((tx1 - tx0)) a_pk=$((rx1 - rx0))
    timeout 600 perf script -F comm,tid,period,event,ip,sym,dso -i "$WORK/paper-bob.data" 2>/dev/null |
        python3 "$ROOT/perf/categories.py" "$b_pk" >"$WORK/paper-sender.json"
    timeout 600 perf script -F comm,tid,period,event,ip,sym,dso -i "$WORK/paper-alice.data" 2>/dev/null |
        python3 "$ROOT/perf/categories.py" "$a_pk" >"$WORK/paper-receiver.json"
    sent=$(jq -r '.end.sum.packets // "?"' "$WORK/paper-client.json" 2>/dev/null || echo "?")
    lost=$(jq -r '(.end.sum.lost_percent // .end.sum_received.lost_percent) | if . == null then "?" else (. * 10 | round / 10) end' "$WORK/paper-client.json" 2>/dev/null || echo "?")
    jq -n --slurpfile s "$WORK/paper-sender.json" --slurpfile r "$WORK/paper-receiver.json" \
        --argjson rate "$RATE" --argjson len "$LEN" --argjson secs "$SECS" --arg lost "$lost" \
        '{rate_pps: $rate, udp_payload: $len, seconds: $secs, iperf3_loss_percent: $lost,
          sender: $s[0], receiver: $r[0]}' >"$BASE-paper.json"
    us() { jq -r --arg c "$2" '.categories[$c].ns_per_packet // 0 | . / 1000 | . * 100 | round / 100' "$1"; }
    S=$WORK/paper-sender.json R=$WORK/paper-receiver.json
    {
        echo "## The paper's per-packet split ($LEN-byte UDP at $RATE packets/s)"
        echo
        echo "bob -> alice through the tunnel, \`iperf3 -u -l $LEN -b $bps\`; cpu-clock sampled every"
        echo "10 us of CPU time on each node (nice $NICE) for $SECS s; packets in that window from the nodes' own"
        echo "per-peer counters: $b_pk sealed by the sender, $a_pk opened by the receiver (iperf3"
        echo "sent $sent datagrams in its $((SECS + 2)) s; loss $lost %). Microseconds of CPU per packet:"
        echo
        echo "| sender (bob) | µs | receiver (alice) | µs |"
        echo "|---|---:|---|---:|"
        echo "| TUN read | $(us "$S" tun_read) | UDP receive | $(us "$R" udp_recv) |"
        echo "| processing | $(us "$S" processing) | crypto | $(us "$R" crypto) |"
        echo "| crypto | $(us "$S" crypto) | processing | $(us "$R" processing) |"
        echo "| UDP send | $(us "$S" udp_send) | TUN write | $(us "$R" tun_write) |"
        echo "| (wait: poll and wake-up) | $(us "$S" wait) | (wait: poll and wake-up) | $(us "$R" wait) |"
        echo "| (network softirq, see below) | $(us "$S" softirq) | (network softirq) | $(us "$R" softirq) |"
        echo "| (other TUN/UDP calls) | $(us "$S" tun_write) / $(us "$S" udp_recv) | | $(us "$R" tun_read) / $(us "$R" udp_send) |"
        echo "| **total CPU per packet** | **$(jq -r '.total_ns_per_packet // 0 | . / 10 | round / 100' "$S")** | **total** | **$(jq -r '.total_ns_per_packet // 0 | . / 10 | round / 100' "$R")** |"
        echo
        echo "Top leaf symbols per category (share of that category's time):"
        echo
        for side in sender receiver; do
            jq -r --arg side "$side" '.categories | to_entries[] | select(.value.ns > 0) |
                "- \($side) \(.key): " + ([.value.top[] | "\(.[0]) \(.[1] * 100 | floor)%"] | join(", "))' \
                "$WORK/paper-$side.json"
        done
        echo
    } >>"$REPORT"
fi

# ---------------------------------------------------------------------------------------------
if has_part callgrind; then
    ensure_cargo || die "cargo not found: needed to build the benches"
    log "callgrind: building benches/dataplane.rs"
    BENCH=$(timeout 1800 cargo bench --profile profiling --bench dataplane --no-run 2>&1 |
        sed -n 's/.*Executable .*(\(.*dataplane-[0-9a-f]*\)).*/\1/p' | tail -n1)
    [[ -x $BENCH ]] || die "no bench executable from 'cargo bench --profile profiling --bench dataplane --no-run'"
    {
        echo "## Instructions per packet (callgrind)"
        echo
        echo "\`valgrind --tool=callgrind $(basename "$BENCH") --bench --profile-time 1 FILTER\`:"
        echo "instructions (Ir) per call, inclusive, of the session's seal/open (header, counter,"
        echo "replay window, AEAD) and of aws-lc's AEAD alone (perf/callgrind.py). Valgrind's"
        echo "virtual CPU has no AVX-512, so aws-lc runs its AES-NI/AVX2 code here."
        echo
        echo "| bench | calls | Ir per packet, session | calls | Ir per packet, AEAD |"
        echo "|---|---:|---:|---:|---:|"
    } >>"$REPORT"
    : >"$BASE-callgrind.txt"
    for filter in encapsulate/seal/64 encapsulate/seal/1400 decapsulate/open/64 decapsulate/open/1400; do
        out="$WORK/cg-${filter//\//-}.out"
        # judged by its output file: the bench binary may exit non-zero after the filtered run
        # (an assertion of an unrelated bench that did not run)
        timeout 600 valgrind --tool=callgrind --callgrind-out-file="$out" \
            "$BENCH" --bench --profile-time 1 "^$filter\$" >"$WORK/cg.log" 2>&1 || true
        [[ -s $out ]] || log "warning: callgrind $filter wrote nothing: $(tail -c 300 "$WORK/cg.log")"
        op=${filter#*/}
        op=${op%%/*} # seal or open
        line=$(python3 "$ROOT/perf/callgrind.py" "$out" "Session::$op\$" \
            "aead_aes_gcm_$([[ $op == seal ]] && echo seal_scatter || echo open_gather)_impl\$" \
            2>>"$BASE-callgrind.txt" ||
            echo "n/a | n/a | n/a | n/a")
        echo "| $filter | $line |" >>"$REPORT"
        { echo "== $filter"; callgrind_annotate --inclusive=yes "$out" 2>/dev/null | head -n 40 || true; } >>"$BASE-callgrind.txt"
    done
    echo >>"$REPORT"
fi

{
    echo "# Profile of ntmtun ($(date -u +%F))"
    echo
    echo "Produced by \`perf/profile.sh ${PARTS[*]}\` (see perf/README.md), commit ${COMMIT:-$(git rev-parse --short HEAD)}."
    echo "Machine: $(nproc) vCPU ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r),"
    echo "load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg) (shared with other jobs)."
    echo
    cat "$REPORT"
} >"$BASE.md"
cat "$BASE.md"
log "wrote $BASE.md"
