#!/usr/bin/env bash
# Throughput, latency and CPU cost of ntmtun against the plain underlay and against WireGuard's
# user-space implementations (wireguard-go, boringtun), side by side in one network lab.
#
# Builds the `lan` lab of scripts/lab.sh (DC, alice, bob and a DNS server on one bridged segment,
# 198.51.100.0/24) under a fresh prefix, starts the DC and both nodes, and measures from bob to
# alice, mode by mode, interleaved (A B C ... A B C ...) and repeated; in each mode:
#   - iperf3 TCP, 1 stream and 4 streams (-P 4), -t SECONDS: receiver throughput; during the
#     1-stream run, the CPU seconds (utime + stime, all threads) of the tunnel processes at both
#     ends, divided by the gigabits moved ("CPU s per Gbit", n/a for plain)
#   - iperf3 UDP flood, -u -b 0, -l 1404 (the largest datagram a 1432-byte tunnel MTU carries
#     unfragmented) and -l 1400 (the paper's test): receiver throughput and loss
#   - the highest UDP rate with under 1% loss, per datagram size (1404 and 1400 B): iperf3 -u -b
#     RATE -w 4M -t 3, a bounded search (--udp-max-steps) starting at that repetition's flood receiver
#     rate, stepping down by 0.7 until a rate passes, then halving the gap to the lowest failure
#   - ping -c 20 -i 0.05 and ping -c 200 -i 0.002 ("ping_fast": threads stay warm)
# Modes: plain (alice's underlay address, default veth offloads), plain_nooff (the same with
# `ethtool -K tso off gso off gro off` on both hosts' veths and bridge ports), ntmtun (the node's
# defaults), ntmtun_nooff (NTMTUN_OFFLOAD=0), ntmtun_io_VALUE (one per --ntmtun-io value),
# wireguard_go and boringtun (each started in alice and bob only for its own runs, on its own
# interface, MTU 1432, overlay 198.19.250.0/24, keys from `wg genkey`, killed by PID after).
# A mode that does not come up is reported as failed (with the reason) and the others go on.
#
# Writes perf/results/DATE-throughput.md, .json and .svg (medians, ratios against plain and the
# best peer, the issue's targets met or short by, every sample, drop counters) and prints the
# table.
#
# Usage: sudo perf/throughput.sh [options]
#   -n N                 repetitions (default 3; medians over them)
#   -t SECONDS           iperf3 duration per run (default 5)
#   -p PREFIX            lab prefix (default pf + random hex; ^[a-z][a-z0-9]{0,7}$)
#   -o DIR               results directory (default perf/results)
#   --modes "M1 M2 ..."  only these modes (default: all that apply), e.g. "plain ntmtun"
#   --ntmtun-io "V1 V2"  one extra ntmtun row per value of node.toml's `io` ("epoll uring"):
#                        the nodes are restarted with NTMTUN_LAB_IO=VALUE and `io = "VALUE"` in
#                        their config (default: none, the node's default io)
#   --udp-max "1404 1400"   datagram sizes of the loss-bounded UDP search (default both;
#                        "" skips it)
#   --udp-max-steps N    iperf3 runs per loss-bounded search (default 6, 1-12; -t 3 each)
#   --no-offload-baseline   skip the plain_nooff mode
#   --no-peers           skip wireguard-go and boringtun
#   --nice N             run the tunnel ends, iperf3 and ping at nice N (e.g. -10: ahead of
#                        other jobs on a shared machine; default 0, left alone)
#   --no-build           do not run `cargo build --release` (use NTMTUN_BIN or target/release)
#   --rev REV            measure a committed revision instead of the working tree: `git archive
#                        REV` into a temporary directory, build it there (target dir
#                        target/perf-rev, kept between runs) and use that tree's scripts/lab.sh
#
# Installs what it needs: Debian packages (iperf3, ethtool, jq, dnsutils, wireguard-go,
# wireguard-tools) with apt-get, boringtun-cli with `cargo install --locked` into
# target/perf-tools (once).
#
# Safety (shared/LAB.md): only the namespaces PREFIX-* that lab.sh creates here, only
# documentation addresses, every command under `timeout`, every loop bounded, iperf3 servers and
# the peers started through `lab.sh spawn` and stopped by PID, and the lab torn down on exit,
# error or Ctrl-C.
set -euo pipefail

ME=${0##*/}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB="$ROOT/scripts/lab.sh"
# shellcheck source=perf/lib.sh
. "$ROOT/perf/lib.sh"

REPEATS=3
SECS=5
PREFIX=
OUT_DIR="$ROOT/perf/results"
OFFLOAD_BASELINE=1
PEERS=1
BUILD=1
REV=
ONLY_MODES=
NTMTUN_IO=
UDP_MAX_SIZES="1404 1400"
UDP_MAX_STEPS=6
UDP_MAX_SECS=3   # each step of the loss-bounded search
UDP_MAX_LOSS=1   # percent: a rate passes below this loss
# iperf3 socket buffers of the search (-w, both ends; net.core.rmem_max here is 4 MiB): with the
# 208 KiB default the receiving iperf3's own socket overflows whenever it is descheduled for
# a millisecond, in every mode, and the search would measure that instead of the tunnel
UDP_MAX_WINDOW=4M

PLAIN_TARGET=198.51.100.11 # alice's underlay address in the lan topology
BOB_UNDERLAY=198.51.100.12
TUNNEL_MTU=1432
PEER_NET=198.19.250 # overlay addresses of the peers (ntmtun's DC assigns from 198.18.0.0)

usage() {
    sed -n '/^# Usage:/,/^# Installs/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [[ $# -gt 0 ]]; do
    case $1 in
    -n) REPEATS=${2:-}; shift 2 ;;
    -t) SECS=${2:-}; shift 2 ;;
    -p) PREFIX=${2:-}; shift 2 ;;
    -o) OUT_DIR=${2:-}; shift 2 ;;
    --modes) ONLY_MODES=${2:-}; shift 2 ;;
    --ntmtun-io) NTMTUN_IO=${2:-}; shift 2 ;;
    --udp-max) UDP_MAX_SIZES=${2-}; shift 2 ;;
    --udp-max-steps) UDP_MAX_STEPS=${2:-}; shift 2 ;;
    --no-offload-baseline) OFFLOAD_BASELINE=0; shift ;;
    --no-peers) PEERS=0; shift ;;
    --nice) NICE=${2:-}; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --rev) REV=${2:-}; shift 2 ;;
    -h | --help) usage ;;
    *) usage ;;
    esac
done
[[ $REPEATS =~ ^[1-9][0-9]?$ ]] || die "-n must be 1-99"
[[ $SECS =~ ^[1-9][0-9]?$ ]] || die "-t must be 1-99 seconds"
[[ $UDP_MAX_STEPS =~ ^[1-9][0-9]?$ && $UDP_MAX_STEPS -le 12 ]] || die "--udp-max-steps must be 1-12"
for v in $UDP_MAX_SIZES; do
    [[ $v == 1404 || $v == 1400 ]] || die "--udp-max: sizes are 1404 and 1400 (got '$v')"
done
[[ $NICE =~ ^-?[0-9]{1,2}$ && $NICE -ge -20 && $NICE -le 19 ]] || die "--nice must be -20..19"
set_nice "$NICE"
[[ -n $PREFIX ]] || PREFIX=$(random_prefix pf)
[[ $PREFIX =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "invalid prefix '$PREFIX'"
for v in $NTMTUN_IO; do
    [[ $v =~ ^[a-z_]{1,16}$ ]] || die "--ntmtun-io: invalid value '$v' (e.g. \"epoll uring\")"
done

[[ $EUID -eq 0 ]] || die "needs root (network namespaces, TUN devices): sudo $0"
[[ -x $LAB ]] || die "$LAB not found"
cd "$ROOT"
ensure_apt ip:iproute2 iperf3:iperf3 ping:iputils-ping jq:jq python3:python3 ethtool:ethtool \
    dig:dnsutils ss:iproute2 dnsmasq:dnsmasq || die "lab tools missing; run scripts/setup.sh"

# The modes, in the order they are interleaved.
MODES=(plain)
[[ $OFFLOAD_BASELINE -eq 1 ]] && MODES+=(plain_nooff)
MODES+=(ntmtun ntmtun_nooff)
for v in $NTMTUN_IO; do MODES+=("ntmtun_io_$v"); done
[[ $PEERS -eq 1 ]] && MODES+=(wireguard_go boringtun)
if [[ -n $ONLY_MODES ]]; then
    declare -A known=()
    for m in "${MODES[@]}"; do known[$m]=1; done
    MODES=()
    for m in $ONLY_MODES; do
        [[ -n ${known[$m]:-} ]] || die "--modes: unknown mode '$m' (known: ${!known[*]})"
        MODES+=("$m")
    done
fi

WORK=$(mktemp -d /tmp/ntmtun-perf.XXXXXX)
SAMPLES="$WORK/samples.tsv"  # rep mode test metric value
FAILURES="$WORK/failures.tsv" # rep mode reason
MODE_INFO="$WORK/modes.tsv"   # mode key value (what ran: versions, io, status)
: >"$SAMPLES"
: >"$FAILURES"
: >"$MODE_INFO"
CUR_MODE=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n $CUR_MODE ]] && mode_down "$CUR_MODE"
    perf_cleanup
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The peers' binaries (installed if missing); a peer that cannot be had fails its mode.
WG_GO=''
BORINGTUN=''
if [[ " ${MODES[*]} " == *" wireguard_go "* || " ${MODES[*]} " == *" boringtun "* ]]; then
    ensure_apt wg:wireguard-tools || log "warning: wg (wireguard-tools) missing: the peers will fail"
fi
if [[ " ${MODES[*]} " == *" wireguard_go "* ]]; then
    ensure_apt wireguard-go:wireguard-go && WG_GO=$(command -v wireguard-go)
fi
if [[ " ${MODES[*]} " == *" boringtun "* ]]; then
    BORINGTUN=$(command -v boringtun-cli 2>/dev/null || ensure_cargo_tool boringtun-cli boringtun-cli || true)
fi

build_ntmtun "$BUILD" "$REV"

sample() { echo -e "$1\t$2\t$3\t$4\t$5" >>"$SAMPLES"; }
mode_info() { echo -e "$1\t$2\t$3" >>"$MODE_INFO"; }

# ---------------------------------------------------------------------------------------------
# The lab

lab_start
tunnel_ready || die "the ntmtun tunnel does not carry pings right after start"
log "alice's virtual address: $VIP"

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
# ntmtun variants: the nodes restarted with an environment (NTMTUN_OFFLOAD=0, NTMTUN_LAB_IO=V).

NTM_ENV=default # what the running nodes were started with

since_restart() { # LOG -> its lines since lab.sh's last restart-node marker
    awk '/^===== lab.sh restart-node/ {n = 0} {l[n++] = $0} END {for (i = 0; i < n; i++) print l[i]}' "$1" 2>/dev/null
}

ntmtun_restart() { # ENV ("default", "offload=0" or "io=VALUE") -> non-zero with FAIL_REASON
    local want=$1 n io='' why
    local -a env=()
    [[ $want == "$NTM_ENV" ]] && return 0
    case $want in
    offload=0) env=(NTMTUN_OFFLOAD=0) ;;
    io=*) io=${want#io=} env=(NTMTUN_LAB_IO="$io") ;;
    esac
    for n in alice bob; do
        # the config keeps the io key only for io=VALUE runs; a lab.sh that writes it from
        # NTMTUN_LAB_IO itself gets the same line
        sed -i '/^io = /d' "$RUN_DIR/$n.toml"
        [[ -n $io ]] && sed -i "1i io = \"$io\"" "$RUN_DIR/$n.toml"
        timeout 60 env "${env[@]}" "$LAB" restart-node "$PREFIX" "$n" >/dev/null 2>&1 || {
            FAIL_REASON="lab.sh restart-node $n failed"
            NTM_ENV=broken
            return 1
        }
    done
    NTM_ENV=broken
    if ! timeout 60 "$LAB" wait "$PREFIX" 20 >"$WORK/wait.log" 2>&1; then
        # the node's own error line (e.g. a config key it does not know), else lab.sh's
        why=$(for n in alice bob; do since_restart "$RUN_DIR/$n.log"; done |
            grep -m1 -A5 -E ' error: | ERROR ' | tr -s '\n\t ' ' ' | head -c 300 || true)
        [[ -n $why ]] || why=$(tail -n 1 "$WORK/wait.log")
        FAIL_REASON="nodes did not register with ${env[*]:-defaults}: ${why//$'\t'/ }"
        return 1
    fi
    NTM_ENV=$want
}

ntmtun_status() { # HOST -> the node's status JSON (compact), or {}
    local s
    s=$(in_ns "$1" 10 "$NTMTUN_BIN" status --socket "$RUN_DIR/$1.sock" --json 2>/dev/null | jq -c . 2>/dev/null || true)
    [[ -n $s ]] || s='{}'
    echo "$s"
}

# ---------------------------------------------------------------------------------------------
# The peers: wireguard-go and boringtun, configured by `wg` in alice and bob.

# Interface names carry the lab prefix: the UAPI sockets (/var/run/wireguard/IFACE.sock) live
# in the one shared filesystem, so alice's and bob's (and another lab's) must not collide.
peer_if() { # KIND HOST
    local k
    [[ $1 == wireguard_go ]] && k=w || k=b
    echo "$PREFIX$k${2:0:1}"
}
peer_addr() { # KIND HOST: wireguard-go .1/.2, boringtun .17/.18 (a /28 each)
    local base=0
    [[ $1 == boringtun ]] && base=16
    [[ $2 == alice ]] && echo "$PEER_NET.$((base + 1))" || echo "$PEER_NET.$((base + 2))"
}
peer_port() { [[ $1 == wireguard_go ]] && echo 51820 || echo 51821; }

peer_up() { # KIND -> sets TARGET and TUN_PIDS, or non-zero with FAIL_REASON
    local kind=$1 h other ifc pid i port
    local -a cmd
    case $kind in
    wireguard_go) [[ -n $WG_GO ]] || { FAIL_REASON="wireguard-go not installed"; return 1; }
        cmd=("$WG_GO" -f) ;;
    boringtun) [[ -n $BORINGTUN ]] || { FAIL_REASON="boringtun-cli not installed"; return 1; }
        cmd=("$BORINGTUN" --foreground --disable-drop-privileges) ;;
    esac
    command -v wg >/dev/null 2>&1 || { FAIL_REASON="wg (wireguard-tools) not installed"; return 1; }
    port=$(peer_port "$kind")
    for h in alice bob; do
        [[ -s $WORK/$kind-$h.key ]] || (umask 077 && wg genkey >"$WORK/$kind-$h.key")
        wg pubkey <"$WORK/$kind-$h.key" >"$WORK/$kind-$h.pub"
    done
    TUN_PIDS=()
    for h in alice bob; do
        ifc=$(peer_if "$kind" "$h")
        pid=$("$LAB" spawn "$PREFIX" "$h" "$kind-$h" env WG_PROCESS_FOREGROUND=1 "${cmd[@]}" "$ifc") || {
            FAIL_REASON="lab.sh spawn $kind in $h failed"
            return 1
        }
        TUN_PIDS+=("$pid")
        for ((i = 0; i < 50; i++)); do # bounded: 5 s for the interface and its UAPI socket
            [[ -S /var/run/wireguard/$ifc.sock ]] && ip -n "$PREFIX-$h" link show "$ifc" >/dev/null 2>&1 && break
            sleep 0.1
        done
        [[ -S /var/run/wireguard/$ifc.sock ]] || {
            FAIL_REASON="$kind in $h: no /var/run/wireguard/$ifc.sock after 5 s: $(tail -c 200 "$RUN_DIR/$kind-$h.log" | tr '\n' ' ')"
            return 1
        }
    done
    for h in alice bob; do
        [[ $h == alice ]] && other=bob || other=alice
        ifc=$(peer_if "$kind" "$h")
        {
            printf '[Interface]\nPrivateKey = %s\nListenPort = %s\n\n' "$(cat "$WORK/$kind-$h.key")" "$port"
            printf '[Peer]\nPublicKey = %s\nAllowedIPs = %s/32\nEndpoint = %s:%s\n' \
                "$(cat "$WORK/$kind-$other.pub")" "$(peer_addr "$kind" "$other")" \
                "$([[ $other == alice ]] && echo "$PLAIN_TARGET" || echo "$BOB_UNDERLAY")" "$port"
        } >"$WORK/$kind-$h.conf"
        chmod 0600 "$WORK/$kind-$h.conf"
        in_ns "$h" 10 wg setconf "$ifc" "$WORK/$kind-$h.conf" 2>"$WORK/wg.err" || {
            FAIL_REASON="wg setconf $ifc in $h failed: $(head -c 200 "$WORK/wg.err")"
            return 1
        }
        if ! ip -n "$PREFIX-$h" addr add "$(peer_addr "$kind" "$h")/28" dev "$ifc" ||
            ! ip -n "$PREFIX-$h" link set "$ifc" mtu "$TUNNEL_MTU" up; then
            FAIL_REASON="address/MTU on $ifc in $h failed"
            return 1
        fi
    done
    TARGET=$(peer_addr "$kind" alice)
    TUN_IF_BOB=$(peer_if "$kind" bob)
    wait_ping "$TARGET" || {
        FAIL_REASON="$kind: no ping through the tunnel"
        return 1
    }
}

peer_down() { # KIND
    local h
    for h in alice bob; do
        timeout 20 "$LAB" stop "$PREFIX" "$1-$h" >/dev/null 2>&1 || true
        rm -f -- "/var/run/wireguard/$(peer_if "$1" "$h").sock"
    done
}

# ---------------------------------------------------------------------------------------------
# Modes: up (TARGET, TUN_PIDS, TUN_IF_BOB) and down.

mode_up() { # MODE -> non-zero with FAIL_REASON
    FAIL_REASON=
    TUN_PIDS=()
    TUN_IF_BOB=
    case $1 in
    plain) TARGET=$PLAIN_TARGET ;;
    plain_nooff) TARGET=$PLAIN_TARGET; offloads_off ;;
    ntmtun | ntmtun_nooff | ntmtun_io_*)
        local want=default
        [[ $1 == ntmtun_nooff ]] && want=offload=0
        [[ $1 == ntmtun_io_* ]] && want=io=${1#ntmtun_io_}
        ntmtun_restart "$want" || return 1
        tunnel_ready || { FAIL_REASON="tunnel not ready after restart ($want)"; return 1; }
        TARGET=$VIP
        TUN_IF_BOB=ntm0
        TUN_PIDS=("$(node_pid alice)" "$(node_pid bob)")
        ;;
    wireguard_go | boringtun) peer_up "$1" || return 1 ;;
    *) FAIL_REASON="unknown mode"; return 1 ;;
    esac
}

mode_down() { # MODE
    case $1 in
    plain_nooff) offloads_restore ;;
    wireguard_go | boringtun) peer_down "$1" ;;
    esac
}

mode_versions() { # MODE -> recorded once per mode in MODE_INFO
    case $1 in
    wireguard_go) mode_info "$1" version "$(dpkg-query -W -f '${Version}' wireguard-go 2>/dev/null || echo unknown)" ;;
    boringtun) mode_info "$1" version "$("$BORINGTUN" --version 2>/dev/null | head -n1 || echo unknown)" ;;
    ntmtun*)
        mode_info "$1" bob_status "$(ntmtun_status bob)"
        ;;
    esac
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
    [[ -n $2 ]] || { echo 0; return; }
    in_ns "$1" 10 cat "/sys/class/net/$2/statistics/$3" 2>/dev/null || echo 0
}

counters() { # -> "alice_rcvbuf bob_sndbuf bob_tun_tx_dropped alice_eth0_rx_dropped"
    echo "$(udp_counter alice RcvbufErrors) $(udp_counter bob SndbufErrors)" \
        "$(link_stat bob "$TUN_IF_BOB" tx_dropped) $(link_stat alice eth0 rx_dropped)"
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

run_iperf() { # REP MODE TEST TARGET
    local rep=$1 mode=$2 test=$3 target=$4 out="$WORK/$1-$2-$3.json"
    local -a extra=()
    case $test in
    tcp4) extra=(-P 4) ;;
    udp) extra=(-u -b 0 -l 1404) ;;
    udp1400) extra=(-u -b 0 -l 1400) ;;
    esac
    local before after cpu0='' cpu1
    before=$(counters)
    start_server
    [[ $test == tcp && ${#TUN_PIDS[@]} -gt 0 ]] && cpu0=$(cpu_seconds "${TUN_PIDS[@]}")
    if ! in_ns bob $((SECS + 30)) "${NICE_CMD[@]}" iperf3 -c "$target" -p "$PORT" -t "$SECS" \
        --connect-timeout 3000 -J "${extra[@]}" >"$out" 2>"$out.err"; then
        log "warning: iperf3 $test $mode (rep $rep) failed: $(jq -r '.error // empty' "$out" 2>/dev/null) $(head -c 300 "$out.err")"
        stop_server
        return 0
    fi
    [[ -n $cpu0 ]] && cpu1=$(cpu_seconds "${TUN_PIDS[@]}")
    stop_server
    after=$(counters)
    local rx
    rx=$(jq '.end.sum_received.bits_per_second // empty | . / 1e6' "$out" 2>/dev/null || true)
    if [[ -z $rx ]]; then
        # iperf3 exited 0 without a receiver summary (the server's results never came back).
        log "warning: iperf3 $test $mode (rep $rep) gave no receiver summary: $(jq -c '{error, end: (.end // {} | keys)}' "$out" 2>/dev/null | head -c 300) $(head -c 300 "$out.err")"
        return 0
    fi
    sample "$rep" "$mode" "$test" rx_mbps "$rx"
    sample "$rep" "$mode" "$test" tx_mbps "$(jq '.end.sum_sent.bits_per_second / 1e6' "$out")"
    case $test in
    tcp*) sample "$rep" "$mode" "$test" retransmits "$(jq '.end.sum_sent.retransmits // 0' "$out")" ;;
    *) sample "$rep" "$mode" "$test" loss_percent "$(jq '.end.sum_received.lost_percent // .end.sum.lost_percent' "$out")"
        record_drops "$rep" "$mode" "$test" "$before" "$after" ;;
    esac
    if [[ -n $cpu0 ]]; then
        local gbit cpu
        gbit=$(jq '.end.sum_received.bytes * 8 / 1e9' "$out")
        cpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {printf "%.3f", b - a}')
        sample "$rep" "$mode" "$test" cpu_s "$cpu"
        awk -v c="$cpu" -v g="$gbit" 'BEGIN {exit !(g > 0)}' &&
            sample "$rep" "$mode" "$test" cpu_s_per_gbit "$(awk -v c="$cpu" -v g="$gbit" 'BEGIN {printf "%.4f", c / g}')"
    fi
    printf '%s: rep %d %-14s %-7s %10.1f Mb/s\n' "$ME" "$rep" "$mode" "$test" "$rx" >&2
}

udp_paced() { # LEN RATE_MBPS OUT -> "RX_MBPS LOSS_PERCENT" of one paced iperf3 UDP run, or non-zero
    local len=$1 rate=$2 out=$3 rx loss
    start_server
    if ! in_ns bob $((UDP_MAX_SECS + 30)) "${NICE_CMD[@]}" iperf3 -c "$TARGET" -p "$PORT" -u \
        -b "${rate}M" -l "$len" -w "$UDP_MAX_WINDOW" -t "$UDP_MAX_SECS" --connect-timeout 3000 -J \
        >"$out" 2>"$out.err"; then
        stop_server
        return 1
    fi
    stop_server
    rx=$(jq '.end.sum_received.bits_per_second // empty | . / 1e6' "$out" 2>/dev/null || true)
    loss=$(jq '.end.sum_received.lost_percent // .end.sum.lost_percent // empty' "$out" 2>/dev/null || true)
    [[ -n $rx && -n $loss ]] || return 1
    echo "$rx $loss"
}

# The highest offered rate that the receiver gets with under UDP_MAX_LOSS % loss, by a bounded
# search: start at this repetition's flood receiver rate (1000 Mb/s if that run failed), step
# down by 0.7 until a rate passes, then bisect between the best pass and the lowest failure
# (stopping once they are within 5%). Records rx_mbps, loss_percent and offered_mbps of the best
# pass, the steps run, and below_mbps (the lowest rate tried) when no rate passed.
run_udp_max() { # REP MODE TEST LEN FLOOD_TEST
    local rep=$1 mode=$2 test=$3 len=$4 flood=$5 step rate res rx loss
    local pass='' pass_rx='' pass_loss='' fail='' steps=0
    rate=$(jq '.end.sum_received.bits_per_second // empty | . / 1e6 | floor' \
        "$WORK/$rep-$mode-$flood.json" 2>/dev/null || true)
    [[ $rate =~ ^[0-9]+$ && $rate -ge 10 ]] || rate=1000
    for ((step = 1; step <= UDP_MAX_STEPS; step++)); do
        steps=$step
        if ! res=$(udp_paced "$len" "$rate" "$WORK/$rep-$mode-$test-$step.json"); then
            log "warning: $test $mode (rep $rep) at ${rate} Mb/s failed: $(head -c 200 "$WORK/$rep-$mode-$test-$step.json.err")"
            break
        fi
        read -r rx loss <<<"$res"
        printf '%s: rep %d %-14s %-10s -b %6dM: %8.1f Mb/s, %5.2f%% loss\n' "$ME" "$rep" "$mode" "$test" "$rate" "$rx" "$loss" >&2
        if awk -v l="$loss" -v m="$UDP_MAX_LOSS" 'BEGIN {exit !(l < m)}'; then
            pass=$rate pass_rx=$rx pass_loss=$loss
        else
            fail=$rate
        fi
        if [[ -z $pass ]]; then
            rate=$((rate * 7 / 10))
        elif [[ -z $fail ]] || ((fail - pass <= pass / 20)); then
            break
        else
            rate=$(((pass + fail) / 2))
        fi
        [[ $rate -ge 1 ]] || break
        sleep 0.5
    done
    sample "$rep" "$mode" "$test" steps "$steps"
    if [[ -n $pass ]]; then
        sample "$rep" "$mode" "$test" rx_mbps "$pass_rx"
        sample "$rep" "$mode" "$test" loss_percent "$pass_loss"
        sample "$rep" "$mode" "$test" offered_mbps "$pass"
    else
        sample "$rep" "$mode" "$test" below_mbps "$rate"
        log "warning: $test $mode (rep $rep): no rate down to ${rate} Mb/s had under $UDP_MAX_LOSS% loss"
    fi
}

run_ping() { # REP MODE TEST TARGET COUNT INTERVAL
    local rep=$1 mode=$2 test=$3 target=$4 count=$5 interval=$6 out
    if ! out=$(in_ns bob 30 "${NICE_CMD[@]}" ping -q -c "$count" -i "$interval" -W 2 "$target" 2>&1); then
        log "warning: $test $mode (rep $rep) failed: $out"
        return 0
    fi
    # rtt min/avg/max/mdev = 0.013/0.070/0.095/0.025 ms
    local rtt mn avg mx
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
    printf '%s: rep %d %-14s %-9s %7.1f us avg\n' "$ME" "$rep" "$mode" "$test" "$avg" >&2
}

TESTS=(tcp tcp4 udp udp1400)
for v in $UDP_MAX_SIZES; do
    [[ $v == 1404 ]] && TESTS+=(udpmax) || TESTS+=(udpmax1400)
done
TESTS+=(ping ping_fast)

measure_mode() { # REP MODE: every test, one after the other
    local rep=$1 mode=$2 test
    for test in "${TESTS[@]}"; do
        case $test in
        tcp | tcp4 | udp | udp1400) run_iperf "$rep" "$mode" "$test" "$TARGET" ;;
        udpmax) run_udp_max "$rep" "$mode" udpmax 1404 udp ;;
        udpmax1400) run_udp_max "$rep" "$mode" udpmax1400 1400 udp1400 ;;
        ping) run_ping "$rep" "$mode" ping "$TARGET" 20 0.05 ;;
        ping_fast) run_ping "$rep" "$mode" ping_fast "$TARGET" 200 0.002 ;;
        esac
        sleep 1 # let queues drain between runs
    done
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u +%FT%TZ)
log "measuring: $REPEATS repetitions x (${MODES[*]}) x (${TESTS[*]}), iperf3 -t $SECS"
declare -A INFO_DONE=()
for ((rep = 1; rep <= REPEATS; rep++)); do
    for mode in "${MODES[@]}"; do
        CUR_MODE=$mode
        if mode_up "$mode"; then
            renice_pids "${TUN_PIDS[@]}"
            measure_mode "$rep" "$mode"
            if [[ -z ${INFO_DONE[$mode]:-} ]]; then
                mode_versions "$mode"
                INFO_DONE[$mode]=1
            fi
        else
            log "mode $mode (rep $rep) FAILED: $FAIL_REASON"
            echo -e "$rep\t$mode\t$FAIL_REASON" >>"$FAILURES"
        fi
        mode_down "$mode"
        CUR_MODE=
    done
done
FINISHED=$(date -u +%FT%TZ)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

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
    --arg prefix "$PREFIX" --arg vip "$VIP" --arg peer_net "$PEER_NET.0/24" \
    --argjson repeats "$REPEATS" --argjson secs "$SECS" --argjson mtu "$TUNNEL_MTU" \
    --argjson nice "$NICE" --arg udp_max "$UDP_MAX_SIZES" --argjson udp_max_steps "$UDP_MAX_STEPS" \
    --argjson udp_max_secs "$UDP_MAX_SECS" --argjson udp_max_loss "$UDP_MAX_LOSS" \
    --arg udp_max_window "$UDP_MAX_WINDOW" \
    '{started: $started, finished: $finished, kernel: $kernel, cpus: ($cpus | tonumber),
      cpu: $cpu, hypervisor: $hyper, loadavg_before: $load, loadavg_after: $load_after,
      commit: $commit, iperf3: $iperf, ntmtun_bin: $bin, lab_prefix: $prefix, repeats: $repeats,
      iperf3_seconds: $secs, tunnel_mtu: $mtu, plain_target: "198.51.100.11",
      tunnel_target: $vip, peer_overlay: $peer_net, nice: $nice, udp_max_sizes: $udp_max,
      udp_max_steps: $udp_max_steps, udp_max_seconds: $udp_max_secs,
      udp_max_loss_percent: $udp_max_loss, udp_max_window: $udp_max_window}')

python3 "$ROOT/perf/report.py" "$SAMPLES" "$FAILURES" "$MODE_INFO" "$ENV_JSON" "$BASE"
python3 "$ROOT/perf/chart.py" "$BASE.json" "$BASE.svg"
log "wrote $BASE.md, $BASE.json and $BASE.svg"
