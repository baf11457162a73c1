#!/usr/bin/env bash
# The office under random traffic (issue "The mesh holds at office scale", part 3): the `office`
# lab (25 nodes behind three NATs, one DC, two relays), and for the whole run, every second, a
# few random pairs ping each other once by name (a pair's first ping is its first contact). At
# the end: pairs tried and lost, the first packets the nodes' queues dropped (counters), and the
# heap of every daemon at the start (after a warm-up) and at the end.
#
# Usage: scripts/office.sh [-d SECONDS] [-p PAIRS] [-g GROWTH_KIB]
#   -d  how long traffic runs (default 1800: 30 minutes)
#   -p  pairs pinged per second (default 8)
#   -g  allowed growth, in KiB, of each daemon's heap (ntmtun_heap_allocated_bytes and
#       ntmtun_heap_obtained_bytes) between the start sample (after 20 s) and the end
#       (default 1024)
#
# Exit status: 0 when no ping was lost and no heap grew beyond -g, 1 otherwise, 2 for bad usage.
# Needs root; builds nothing: NTMTUN_BIN or target/release/ntmtun. The lab (prefix of*) is torn
# down on exit, also on failure and Ctrl-C; logs stay in /tmp/ntmtun-office-PREFIX/.

set -euo pipefail

ME=${0##*/}
HERE=$(cd "$(dirname "$0")" && pwd)
LAB=$HERE/lab.sh
DURATION=1800
PAIRS=8
GROWTH_KIB=1024
WARMUP=20
METRICS_PORT=9100 # lab.sh: metrics_listen of every daemon, on its namespace's loopback

die() {
    echo "$ME: error: $*" >&2
    exit 2
}

while getopts "d:p:g:h" opt; do
    case $opt in
    d) DURATION=$OPTARG ;;
    p) PAIRS=$OPTARG ;;
    g) GROWTH_KIB=$OPTARG ;;
    *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
[[ $DURATION =~ ^[0-9]{1,6}$ && $DURATION -ge 40 ]] || die "-d SECONDS must be a number >= 40, not '$DURATION'"
[[ $PAIRS =~ ^[0-9]{1,3}$ && $PAIRS -ge 1 ]] || die "-p PAIRS must be a number >= 1, not '$PAIRS'"
[[ $GROWTH_KIB =~ ^[0-9]{1,9}$ ]] || die "-g GROWTH_KIB must be a number of KiB, not '$GROWTH_KIB'"
[[ $EUID -eq 0 ]] || die "the office run needs root (network namespaces); run as root"
for c in ip curl shuf; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' not found; run scripts/setup.sh"
done
export NTMTUN_BIN=${NTMTUN_BIN:-$HERE/../target/release/ntmtun}
[[ -x $NTMTUN_BIN ]] || die "no ntmtun binary at $NTMTUN_BIN: run cargo build --release or set NTMTUN_BIN"

PREFIX=of$(printf '%05d' $((RANDOM % 100000)))
RUN=/tmp/ntmtun-lab/$PREFIX
OUT=/tmp/ntmtun-office-$PREFIX
mkdir -p "$OUT"
cleanup() {
    if [[ -d $RUN ]]; then
        cp "$RUN"/*.log "$OUT"/ 2>/dev/null || true
        "$LAB" down "$PREFIX" >/dev/null 2>&1 || echo "$ME: WARNING: run '$LAB down $PREFIX'" >&2
    fi
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "$ME: $*" >&2; }

heap_kib() { # DAEMON -> "ALLOCATED OBTAINED" in KiB from its metrics endpoint, or nothing
    ip netns exec "$PREFIX-$1" curl -s -m 5 "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null |
        awk '$1 == "ntmtun_heap_allocated_bytes" {a = $2} $1 == "ntmtun_heap_obtained_bytes" {o = $2}
             END {if (a != "" && o != "") printf "%d %d\n", a / 1024, o / 1024}' || true
}

dropped() { # NODE REASON -> its ntmtun_node_control_dropped_total for REASON
    ip netns exec "$PREFIX-$1" curl -s -m 5 "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null |
        awk -v s="ntmtun_node_control_dropped_total{reason=\"$2\"}" '$1 == s {print $2}' || true
}

log "lab $PREFIX: office topology"
"$LAB" up office "$PREFIX" >"$OUT/lab-up.log" 2>&1 || { cat "$OUT/lab-up.log" >&2; exit 1; }
"$LAB" start "$PREFIX" >"$OUT/lab-start.log" 2>&1 || { cat "$OUT/lab-start.log" >&2; exit 1; }
read -r -a NODES <<<"$(awk '$2 == "node" {print $1}' "$RUN/hosts" | xargs)"
DAEMONS=(dc $(cat "$RUN/relays") "${NODES[@]}")
log "${#NODES[@]} nodes; $PAIRS random pairs pinged per second for $DURATION s"

declare -A START_HEAP=() END_HEAP=()
TRIED=0
LOST=0
: >"$OUT/pings"
END=$((SECONDS + DURATION))
T0=$SECONDS
for ((k = 0; k < DURATION; k++)); do # bounded: one round per second of the run
    ((SECONDS < END)) || break
    if ((SECONDS - T0 >= WARMUP && ${#START_HEAP[@]} == 0)); then
        for d in "${DAEMONS[@]}"; do START_HEAP[$d]=$(heap_kib "$d"); done
    fi
    for ((i = 0; i < PAIRS; i++)); do
        read -r a b <<<"$(printf '%s\n' "${NODES[@]}" | shuf -n 2 | xargs)"
        (
            if ip netns exec "$PREFIX-$a" ping -n -q -c 1 -W 3 "$b.ntm.internal" >/dev/null 2>&1; then
                echo "ok $a $b"
            else
                echo "lost $a $b $(date -u +%T)"
            fi
        ) >>"$OUT/pings" &
    done
    sleep 1
done
wait
for d in "${DAEMONS[@]}"; do END_HEAP[$d]=$(heap_kib "$d"); done
TRIED=$(wc -l <"$OUT/pings")
LOST=$(grep -c '^lost' "$OUT/pings" || true)
PAIRS_SEEN=$(awk '{print $2, $3}' "$OUT/pings" | sort -u | wc -l)
queue=0
orphan=0
for n in "${NODES[@]}"; do
    q=$(dropped "$n" peer_queue_full)
    o=$(dropped "$n" orphan_queue_full)
    queue=$((queue + ${q:-0}))
    orphan=$((orphan + ${o:-0}))
done

echo
echo "office $PREFIX, $DURATION s: $TRIED pings over $PAIRS_SEEN distinct pairs, $LOST lost"
echo "first packets dropped by full queues: $queue (peer queue), $orphan (unknown address)"
echo
echo "heap KiB, start (after $WARMUP s) -> end: allocated, obtained"
FAIL=0
for d in "${DAEMONS[@]}"; do
    read -r sa so <<<"${START_HEAP[$d]:-}" || true
    read -r ea eo <<<"${END_HEAP[$d]:-}" || true
    if [[ -z $sa || -z $ea ]]; then
        printf '%-8s no figures\n' "$d"
        log "$d: no heap figures from its metrics endpoint"
        FAIL=1
        continue
    fi
    printf '%-8s %d -> %d (%+d)   %d -> %d (%+d)\n' "$d" "$sa" "$ea" $((ea - sa)) "$so" "$eo" $((eo - so))
    if ((ea - sa > GROWTH_KIB || eo - so > GROWTH_KIB)); then
        log "$d: heap grew by $((ea - sa)) KiB allocated, $((eo - so)) KiB obtained (limit $GROWTH_KIB KiB)"
        FAIL=1
    fi
done
if ((LOST > 0)); then
    log "$LOST pings lost:"
    grep '^lost' "$OUT/pings" | head -20 >&2
    FAIL=1
fi
echo
echo "logs and every ping: $OUT"
exit $FAIL
