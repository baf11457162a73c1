#!/usr/bin/env bash
# Soak: the roam lab under continuous iperf3 traffic with churn, reporting bytes moved, errors and
# the memory of every daemon: resident, and what its allocator holds (issue "Hostile networks and
# faults", part 7).
#
# Usage: scripts/soak.sh [-d SECONDS] [-c CHURN_SECONDS] [-g GROWTH_KIB] [-H DAEMON[,DAEMON...]]
#   -d  how long traffic runs (default 600)
#   -c  seconds between churn events (default 20): they alternate between restarting alice
#       (the iperf3 server's node: lab.sh restart-node) and roaming bob to the other Internet
#       segment (lab.sh move); both nodes rekey every 10 s (rekey_secs = 10)
#   -g  allowed growth, in KiB, of the heap of each daemon that runs the whole soak (the DC, the
#       relay, bob) between the start sample (after the first iperf3 run, 20 s of traffic) and
#       the end: both the bytes allocated (a leak) and the bytes malloc obtained from the kernel
#       (retention), from the metrics gauges ntmtun_heap_*_bytes (default 1024 = 1 MiB). VmRSS
#       is reported, not judged: it also grows while packets first reach pages of long-lived
#       zeroed buffers (docs/security.md, Soak). alice restarts: her figures are not judged
#   -H  run each DAEMON (dc, relay1, alice, bob) under heaptrack's preload library (every malloc
#       and free with its backtrace; the process keeps its PID, so its VmRSS is still sampled);
#       each process of it writes OUT/DAEMON.PID.heaptrack.zst, read it with heaptrack_print; at
#       the end they get SIGKILL, so heaptrack lists everything they held then as "leaked"
#
# bob runs `iperf3 -c alice.ntm.internal -t 20` back to back for the duration (by name, through
# the tunnel). Exit status: 0 when no daemon's heap grew beyond -g and traffic never stopped
# (never two iperf3 runs in a row that moved nothing), 1 otherwise, 2 for bad usage.
#
# Needs root; builds nothing: NTMTUN_BIN or target/release/ntmtun. The lab (prefix sk*) is torn
# down on exit, also on failure and Ctrl-C. Logs stay in /tmp/ntmtun-soak-PREFIX/ after the run.

set -euo pipefail

ME=${0##*/}
HERE=$(cd "$(dirname "$0")" && pwd)
LAB=$HERE/lab.sh
DURATION=600
CHURN=20
GROWTH_KIB=1024
REKEY_SECS=10
RUN_SECS=20

die() {
    echo "$ME: error: $*" >&2
    exit 2
}

HEAP_DAEMON=
while getopts "d:c:g:H:h" opt; do
    case $opt in
    d) DURATION=$OPTARG ;;
    c) CHURN=$OPTARG ;;
    g) GROWTH_KIB=$OPTARG ;;
    H) HEAP_DAEMON=$OPTARG ;;
    *) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
[[ $DURATION =~ ^[0-9]{1,6}$ && $DURATION -ge 30 ]] || die "-d SECONDS must be a number >= 30, not '$DURATION'"
[[ $CHURN =~ ^[0-9]{1,5}$ && $CHURN -ge 5 ]] || die "-c CHURN_SECONDS must be a number >= 5, not '$CHURN'"
[[ $GROWTH_KIB =~ ^[0-9]{1,9}$ ]] || die "-g GROWTH_KIB must be a number of KiB, not '$GROWTH_KIB'"
[[ -z $HEAP_DAEMON || $HEAP_DAEMON =~ ^(dc|relay1|alice|bob)(,(dc|relay1|alice|bob))*$ ]] ||
    die "-H takes daemons from dc, relay1, alice, bob, separated by commas, not '$HEAP_DAEMON'"
[[ $EUID -eq 0 ]] || die "the soak needs root (network namespaces); run as root"
for c in iperf3 jq ip curl; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' not found; run scripts/setup.sh"
done
export NTMTUN_BIN=${NTMTUN_BIN:-$HERE/../target/release/ntmtun}
[[ -x $NTMTUN_BIN ]] || die "no ntmtun binary at $NTMTUN_BIN: run cargo build --release or set NTMTUN_BIN"

PREFIX=sk$(printf '%05d' $((RANDOM % 100000)))
RUN=/tmp/ntmtun-lab/$PREFIX
OUT=/tmp/ntmtun-soak-$PREFIX
mkdir -p "$OUT"
CHURN_PID=
cleanup() {
    if [[ -n $CHURN_PID ]] && kill -0 "$CHURN_PID" 2>/dev/null; then
        kill "$CHURN_PID" 2>/dev/null || true
        wait "$CHURN_PID" 2>/dev/null || true
    fi
    if [[ -d $RUN ]]; then
        cp "$RUN"/*.log "$OUT"/ 2>/dev/null || true
        "$LAB" down "$PREFIX" >/dev/null 2>&1 || echo "$ME: WARNING: run '$LAB down $PREFIX'" >&2
    fi
    local i p
    for ((i = 0; i < 120; i++)); do # -H: each interpreter removes its pipe when its daemon has exited
        compgen -G "$OUT/heaptrack.*.pipe" >/dev/null || break
        sleep 1
    done
    for p in "$OUT"/heaptrack.*.pipe; do # a pipe never opened: give its reader an end of file
        if [[ -p $p ]]; then timeout 2 dd of="$p" </dev/null 2>/dev/null || true; fi
    done
    return 0 # under set -e a failing last command here would become the exit status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "$ME: $*" >&2; }

# -H: lab.sh starts every daemon as `$NTMTUN_BIN ROLE --config RUN/NAME.toml`; a shim in its place
# execs the real binary, with heaptrack's preload library for the one named (exec: same PID).
# For each such process, heaptrack_interpret turns the raw trace from a pipe into the profile.
if [[ -n $HEAP_DAEMON ]]; then
    ht_lib=/usr/lib/heaptrack/libheaptrack_preload.so
    ht_interp=/usr/lib/heaptrack/libexec/heaptrack_interpret
    [[ -f $ht_lib && -x $ht_interp ]] && command -v zstd >/dev/null 2>&1 ||
        die "-H needs heaptrack ($ht_lib, $ht_interp) and zstd: apt-get install heaptrack zstd"
    real_bin=$(realpath "$NTMTUN_BIN")
    {
        echo '#!/bin/sh'
        echo 'case " $* " in'
        for d in ${HEAP_DAEMON//,/ }; do
            cat <<EOF
*" $RUN/$d.toml "*)
    pipe=$OUT/heaptrack.\$\$.pipe
    mkfifo "\$pipe" || exit 1
    { "$ht_interp" <"\$pipe" | zstd -q -o "$OUT/$d.\$\$.heaptrack.zst"; rm -f "\$pipe"; } \\
        </dev/null >>"$OUT/heaptrack.log" 2>&1 &
    exec env LD_PRELOAD=$ht_lib DUMP_HEAPTRACK_OUTPUT="\$pipe" "$real_bin" "\$@" ;;
EOF
        done
        echo 'esac'
        echo "exec \"$real_bin\" \"\$@\""
    } >"$OUT/ntmtun-shim"
    chmod 755 "$OUT/ntmtun-shim"
    export NTMTUN_BIN=$OUT/ntmtun-shim
fi

pid_of() { # NAME -> the PID lab.sh recorded last
    awk -v n="$1" '$1 == n {p = $2} END {print p}' "$RUN/pids"
}

rss_kib() { # PID -> VmRSS in KiB, or nothing
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || true
}

anon_kib() { # PID -> anonymous memory (heap, arenas, stacks, buffers) in KiB, or nothing
    awk '/^Anonymous:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || true
}

heap_kib() { # DAEMON -> "ALLOCATED OBTAINED" in KiB from its metrics endpoint, or nothing
    ip netns exec "$PREFIX-$1" curl -s -m 5 "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null |
        awk '$1 == "ntmtun_heap_allocated_bytes" {a = $2} $1 == "ntmtun_heap_obtained_bytes" {o = $2}
             END {if (a != "" && o != "") printf "%d %d\n", a / 1024, o / 1024}' || true
}

DAEMONS=(dc relay1 alice bob)
METRICS_PORT=9100 # lab.sh: metrics_listen of every daemon, on its namespace's loopback
declare -A START_RSS=() PEAK_RSS=() END_RSS=() START_PID=() START_HEAP=() END_HEAP=()
sample() { # record peaks; with "start", also the start figures
    local d pid r h
    for d in "${DAEMONS[@]}"; do
        pid=$(pid_of "$d")
        r=$(rss_kib "$pid")
        [[ -n $r ]] || continue
        h=$(heap_kib "$d")
        if [[ $1 == start ]]; then START_RSS[$d]=$r; START_PID[$d]=$pid; START_HEAP[$d]=$h; fi
        END_RSS[$d]=$r
        END_HEAP[$d]=$h
        echo "$((SECONDS - T0)) $d $pid $r $(anon_kib "$pid") ${h:-- -}" >>"$OUT/rss.tsv"
        [[ $r -gt ${PEAK_RSS[$d]:-0} ]] && PEAK_RSS[$d]=$r
    done
    return 0
}

log "lab $PREFIX: roam topology"
"$LAB" up roam "$PREFIX" >"$OUT/lab-up.log" 2>&1 || { cat "$OUT/lab-up.log" >&2; exit 1; }
"$LAB" start "$PREFIX" >"$OUT/lab-start.log" 2>&1 || { cat "$OUT/lab-start.log" >&2; exit 1; }
# Short rekeys for both nodes (the key must sit before the [dns] table), then restart them.
for n in alice bob; do
    sed -i "/^\[dns\]/i rekey_secs = $REKEY_SECS" "$RUN/$n.toml"
    "$LAB" restart-node "$PREFIX" "$n" >>"$OUT/lab-start.log" 2>&1
done
"$LAB" wait "$PREFIX" 30 >>"$OUT/lab-start.log" 2>&1
"$LAB" spawn "$PREFIX" alice iperfs iperf3 -s -p 5201 >>"$OUT/lab-start.log" 2>&1

# Churn in the background: alternate a restart of alice and a move of bob.
(
    trap 'exit 0' TERM
    i=0
    while true; do
        sleep "$CHURN"
        if ((i % 2 == 0)); then
            "$LAB" restart-node "$PREFIX" alice >>"$OUT/churn.log" 2>&1 &&
                echo "$(date -u +%T) restart alice" >>"$OUT/events" ||
                echo "$(date -u +%T) restart alice FAILED" >>"$OUT/events"
        else
            "$LAB" move "$PREFIX" bob >>"$OUT/churn.log" 2>&1 &&
                echo "$(date -u +%T) move bob" >>"$OUT/events" ||
                echo "$(date -u +%T) move bob FAILED" >>"$OUT/events"
        fi
        i=$((i + 1))
    done
) &
CHURN_PID=$!
: >"$OUT/events"

log "traffic for $DURATION s, churn every $CHURN s, rekey every $REKEY_SECS s"
BYTES=0
RUNS=0
FAILED=0
ZERO_STREAK=0
STOPPED=0
STARTED=0
END=$((SECONDS + DURATION))
T0=$SECONDS
echo "seconds daemon pid vmrss_kib anonymous_kib heap_allocated_kib heap_obtained_kib" >"$OUT/rss.tsv"
for ((k = 0; k < DURATION; k++)); do # bounded: at most one run per second of the soak
    ((SECONDS < END)) || break
    secs=$((END - SECONDS < RUN_SECS ? END - SECONDS : RUN_SECS))
    ((secs >= 2)) || break
    RUNS=$((RUNS + 1))
    json=$OUT/iperf-$RUNS.json
    "$LAB" exec "$PREFIX" bob timeout -k 5 $((secs + 30)) \
        iperf3 -c alice.ntm.internal -p 5201 -t "$secs" -J >"$json" 2>/dev/null || true
    got=$(jq -r '.end.sum_received.bytes // 0 | floor' "$json" 2>/dev/null || echo 0)
    [[ $got =~ ^[0-9]+$ ]] || got=0
    if [[ $got -eq 0 ]]; then
        FAILED=$((FAILED + 1))
        ZERO_STREAK=$((ZERO_STREAK + 1))
        ((ZERO_STREAK < 2)) || STOPPED=1
        log "iperf3 run $RUNS moved nothing: $(jq -r '.error // "no JSON"' "$json" 2>/dev/null | head -c 200)"
        sleep 1
    else
        ZERO_STREAK=0
        BYTES=$((BYTES + got))
    fi
    if ((STARTED == 0)); then sample start; STARTED=1; else sample peak; fi
done
sample end
for d in ${HEAP_DAEMON//,/ }; do # -H: heaptrack reports what a killed process held as leaked
    kill -KILL "$(pid_of "$d")" 2>/dev/null || true
done
kill "$CHURN_PID" 2>/dev/null || true
wait "$CHURN_PID" 2>/dev/null || true
CHURN_PID=

restarts=$(grep -c "restart alice$" "$OUT/events" || true)
moves=$(grep -c "move bob$" "$OUT/events" || true)
churn_failed=$(grep -c "FAILED" "$OUT/events" || true)
errors=0
for d in "${DAEMONS[@]}"; do
    e=$(grep -c " ERROR " "$RUN/$d.log" 2>/dev/null || true)
    errors=$((errors + ${e:-0}))
done
handshakes=$(cat "$RUN/alice.log" "$RUN/bob.log" 2>/dev/null | grep -c "tunnel up" || true)

echo
echo "soak $PREFIX (roam), $DURATION s: $RUNS iperf3 runs of up to $RUN_SECS s, $FAILED moved nothing"
echo "churn: $restarts restarts of alice, $moves moves of bob, $churn_failed churn commands failed;" \
    "rekey_secs $REKEY_SECS ($handshakes tunnel handshakes completed in all)"
awk -v b="$BYTES" -v d="$DURATION" 'BEGIN {printf "traffic: %.0f bytes (%.2f GB) moved, %.1f Mbit/s on average\n", b, b / 1e9, b * 8 / d / 1e6}'
echo "errors: $FAILED empty iperf3 runs, $errors ERROR lines in the daemons' logs"
echo
echo "KiB, start (after the first iperf3 run) -> end (growth); VmRSS also its peak"
printf '%-8s %8s  %-36s %-26s %-26s %s\n' daemon pid "VmRSS" "heap allocated" "heap obtained" judged
FAIL=0
for d in "${DAEMONS[@]}"; do
    s=${START_RSS[$d]:-0} e=${END_RSS[$d]:-0} p=${PEAK_RSS[$d]:-0}
    read -r sa so <<<"${START_HEAP[$d]:-}" || true
    read -r ea eo <<<"${END_HEAP[$d]:-}" || true
    judged=yes
    [[ $d == alice ]] && judged="no (restarted)"
    [[ $(pid_of "$d") == "${START_PID[$d]:-}" ]] || judged="no (restarted)"
    if [[ -z $sa || -z $ea ]]; then
        heap_a="no figures" heap_o="no figures"
    else
        heap_a=$(printf '%d -> %d (%+d)' "$sa" "$ea" $((ea - sa)))
        heap_o=$(printf '%d -> %d (%+d)' "$so" "$eo" $((eo - so)))
    fi
    printf '%-8s %8s  %-36s %-26s %-26s %s\n' "$d" "${START_PID[$d]:--}" \
        "$(printf '%d -> %d (%+d), peak %d' "$s" "$e" $((e - s)) "$p")" "$heap_a" "$heap_o" "$judged"
    [[ $judged == yes ]] || continue
    if [[ -z $sa || -z $ea ]]; then
        log "$d: no heap figures from its metrics endpoint (ntmtun_heap_*_bytes; glibc builds only)"
        FAIL=1
    elif ((ea - sa > GROWTH_KIB || eo - so > GROWTH_KIB)); then
        log "$d: heap grew by $((ea - sa)) KiB allocated, $((eo - so)) KiB obtained (limit $GROWTH_KIB KiB)"
        FAIL=1
    fi
done
if ((STOPPED)); then
    log "traffic stopped: two iperf3 runs in a row moved nothing"
    FAIL=1
fi
if ((BYTES == 0)); then
    log "no traffic at all"
    FAIL=1
fi
echo
echo "logs, iperf3 JSON and memory after every iperf3 run (rss.tsv): $OUT"
exit $FAIL
