#!/usr/bin/env bash
# ntmtun network lab: network namespaces, a bridge, a DNS server and the ntmtun daemons.
#
# Safety (see shared/LAB.md): only namespaces named PREFIX-*, created here; only the
# documentation ranges 198.51.100.0/24 and 2001:db8:100::/64; processes are killed by the PID
# recorded when they were started (checked against their start time, so a reused PID is never
# hit) or because they run inside one of this lab's namespaces; every wait is bounded.
#
# Usage:
#   lab.sh up TOPOLOGY PREFIX       build a topology (only "lan" for now)
#   lab.sh start PREFIX             keys, configs, start the DC and both nodes (needs NTMTUN_BIN),
#                                   then wait until both nodes are registered
#   lab.sh wait PREFIX [SECONDS]    wait until both nodes report dc.state "registered"
#   lab.sh restart-dc PREFIX        stop the DC (by PID) and start it again with the same config
#   lab.sh spawn PREFIX HOST NAME CMD...
#                                   run CMD in the background in PREFIX-HOST, stdout to
#                                   RUN/NAME.out, stderr to RUN/NAME.log; its PID is recorded so
#                                   that `down` stops it
#   lab.sh stop PREFIX NAME         stop a process recorded under NAME (TERM, bounded wait, KILL)
#   lab.sh exec PREFIX HOST CMD...  ip netns exec PREFIX-HOST CMD...
#   lab.sh down PREFIX              stop everything, delete the namespaces, /etc/netns entries and
#                                   the run dir (safe to repeat, safe after a partial `up`)
#   lab.sh list                     labs that exist on this machine (run dirs and namespaces)
#
# Environment: NTMTUN_BIN (the ntmtun binary, for start/wait/restart-dc), RUST_LOG (passed to
# the daemons, default info), NTMTUN_LAB_WAIT (seconds `start` waits for registration, default 15).
# Run dir: /tmp/ntmtun-lab/PREFIX/ (pids, logs, configs, keys).
set -euo pipefail

LAB_ROOT=/tmp/ntmtun-lab
ME=${0##*/}

# The "lan" topology: one Internet segment.
declare -A LAN_V4=([dc]=198.51.100.10 [alice]=198.51.100.11 [bob]=198.51.100.12 [dns]=198.51.100.53)
declare -A LAN_V6=([dc]=2001:db8:100::10 [alice]=2001:db8:100::11 [bob]=2001:db8:100::12 [dns]=2001:db8:100::53)
LAN_HOSTS=(dc alice bob dns)
NODES=(alice bob)
DC_PORT=7446
ENROLL_TOKEN=lab-enrollment-token

die() {
    echo "$ME: error: $*" >&2
    exit 1
}

log() {
    echo "$ME: $*" >&2
}

usage() {
    sed -n '/^# Usage:/,/^# Run dir/p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

validate_prefix() {
    [[ ${1:-} =~ ^[a-z][a-z0-9]{0,7}$ ]] ||
        die "invalid PREFIX '${1:-}': must match ^[a-z][a-z0-9]{0,7}\$"
}

validate_host() {
    [[ ${1:-} =~ ^[a-z][a-z0-9]{0,5}$ ]] || die "invalid HOST '${1:-}'"
}

need_root() {
    [[ $EUID -eq 0 ]] || die "the lab needs root (network namespaces); run as root or with sudo"
}

need_cmds() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "'$c' not found; run scripts/setup.sh"
    done
}

run_dir() { echo "$LAB_ROOT/$1"; }

ns_exists() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -qxF -- "$1"
}

lab_namespaces() { # all namespaces of this prefix that exist
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$1-" || true
}

# ---------------------------------------------------------------------------------------------
# Process bookkeeping: RUN/pids has one line per process: "NAME PID STARTTIME".

proc_starttime() { # prints field 22 of /proc/PID/stat, or nothing
    local stat rest
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    rest=${stat##*) }
    # shellcheck disable=SC2086
    set -- $rest
    # after "comm)" the fields start at 3 (state); starttime is field 22
    echo "${20:-}"
}

proc_state() {
    local stat rest
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    rest=${stat##*) }
    echo "${rest%% *}"
}

# true if PID is still the very process recorded (same start time) and not a zombie
proc_alive() {
    local pid=${1:-} start=${2:-}
    [[ -n $pid && -d /proc/$pid ]] || return 1
    [[ "$(proc_starttime "$pid")" == "$start" ]] || return 1
    [[ "$(proc_state "$pid")" != Z ]]
}

record_pid() { # RUN NAME PID
    local start
    start=$(proc_starttime "$3")
    [[ -n $start ]] || start=gone
    echo "$2 $3 $start" >>"$1/pids"
}

unrecord() { # RUN NAME
    [[ -f $1/pids ]] || return 0
    local tmp
    tmp=$(mktemp "$1/pids.XXXXXX")
    awk -v n="$2" '$1 != n' "$1/pids" >"$tmp" || true
    mv "$tmp" "$1/pids"
}

recorded() { # RUN NAME -> "PID START" of the last record
    [[ -f $1/pids ]] || return 0
    awk -v n="$2" '$1 == n {p = $2 " " $3} END {if (p != "") print p}' "$1/pids"
}

# Stop processes given as "PID START" pairs: SIGTERM, wait up to ~5 s, SIGKILL, wait up to ~2 s.
STOP_PIDS=()
STOP_STARTS=()

any_alive() {
    local i
    for i in "${!STOP_PIDS[@]}"; do
        proc_alive "${STOP_PIDS[$i]}" "${STOP_STARTS[$i]}" && return 0
    done
    return 1
}

wait_all_gone() { # TENTHS_OF_A_SECOND
    local n
    for ((n = 0; n < $1; n++)); do
        any_alive || return 0
        sleep 0.1
    done
    ! any_alive
}

stop_pids() {
    STOP_PIDS=()
    STOP_STARTS=()
    while [[ $# -ge 2 ]]; do
        if proc_alive "$1" "$2"; then
            STOP_PIDS+=("$1")
            STOP_STARTS+=("$2")
            kill -TERM "$1" 2>/dev/null || true
        fi
        shift 2
    done
    [[ ${#STOP_PIDS[@]} -gt 0 ]] || return 0
    wait_all_gone 50 && return 0
    local i
    for i in "${!STOP_PIDS[@]}"; do
        if proc_alive "${STOP_PIDS[$i]}" "${STOP_STARTS[$i]}"; then
            log "pid ${STOP_PIDS[$i]} ignored SIGTERM for 5 s; sending SIGKILL"
            kill -KILL "${STOP_PIDS[$i]}" 2>/dev/null || true
        fi
    done
    wait_all_gone 20 && return 0
    for i in "${!STOP_PIDS[@]}"; do
        if proc_alive "${STOP_PIDS[$i]}" "${STOP_STARTS[$i]}"; then
            log "warning: pid ${STOP_PIDS[$i]} is still alive"
        fi
    done
    return 0
}

stop_named() { # RUN NAME
    local rec
    rec=$(recorded "$1" "$2")
    if [[ -n $rec ]]; then
        # shellcheck disable=SC2086
        stop_pids $rec
    fi
    unrecord "$1" "$2"
}

# Start "$@" in the background inside namespace NS, stdin from /dev/null, stdout appended to
# OUT, stderr appended to ERR; record its PID under NAME. `ip netns exec` and `env` both exec, so $! is
# the PID of the program itself.
start_bg() { # RUN NAME NS OUT ERR CMD...
    local run=$1 name=$2 ns=$3 out=$4 err=$5
    shift 5
    ip netns exec "$ns" "$@" </dev/null >>"$out" 2>>"$err" &
    local pid=$!
    # the start time is set at fork and kept across exec: it identifies this process
    record_pid "$run" "$name" "$pid"
    echo "$pid"
}

log_tail() { # FILE...
    local f
    for f in "$@"; do
        [[ -f $f ]] || continue
        echo "----- last lines of $f -----" >&2
        tail -n 40 "$f" >&2 || true
    done
}

# ---------------------------------------------------------------------------------------------
# up

cmd_up() {
    [[ $# -eq 2 ]] || usage
    local topo=$1 prefix=$2
    validate_prefix "$prefix"
    need_root
    need_cmds ip dnsmasq dig awk
    case $topo in
    lan) ;;
    *) die "unknown topology '$topo' (available: lan)" ;;
    esac
    local run
    run=$(run_dir "$prefix")
    if [[ -e $run || -n "$(lab_namespaces "$prefix")" ]]; then
        die "lab '$prefix' already exists (run dir or namespaces); run: $ME down $prefix"
    fi
    mkdir -p "$LAB_ROOT"
    mkdir -m 0700 "$run"
    # a failed `up` leaves nothing behind
    UP_PREFIX=$prefix
    trap on_up_exit EXIT
    "up_$topo" "$prefix" "$run"
    trap - EXIT
    log "lab '$prefix' ($topo) is up; run dir $run"
}

UP_PREFIX=
on_up_exit() {
    local rc=$?
    if [[ $rc -ne 0 && -n $UP_PREFIX ]]; then
        log "up failed; cleaning up lab '$UP_PREFIX'"
        (cmd_down "$UP_PREFIX") || true
    fi
    exit "$rc"
}

up_lan() {
    local prefix=$1 run=$2 sw="$1-sw" h ns
    echo "lan" >"$run/topology"
    ip netns add "$sw"
    ip -n "$sw" link set lo up
    ip -n "$sw" link add br0 type bridge stp_state 0 mcast_snooping 0
    ip -n "$sw" link set br0 up
    for h in "${LAN_HOSTS[@]}"; do
        ns="$prefix-$h"
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # veth created in the switch namespace, its peer goes straight into the host namespace
        ip -n "$sw" link add "$h" type veth peer name eth0 netns "$ns"
        ip -n "$sw" link set "$h" master br0
        ip -n "$sw" link set "$h" up
        ip netns exec "$ns" sysctl -q -w net.ipv6.conf.eth0.accept_ra=0
        ip -n "$ns" addr add "${LAN_V4[$h]}/24" dev eth0
        ip -n "$ns" addr add "${LAN_V6[$h]}/64" dev eth0 nodad
        ip -n "$ns" link set eth0 up
    done
    # the namespaces' resolver (bind-mounted over /etc/resolv.conf by `ip netns exec`)
    for h in dc alice bob; do
        mkdir -p "/etc/netns/$prefix-$h"
        printf 'nameserver %s\n' "${LAN_V4[dns]}" >"/etc/netns/$prefix-$h/resolv.conf"
    done
    # an ordinary DNS server for the test zone example.test
    start_bg "$run" dnsmasq "$prefix-dns" "$run/dnsmasq.out" "$run/dnsmasq.stderr.log" \
        dnsmasq --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
        --listen-address="${LAN_V4[dns]}" --listen-address="${LAN_V6[dns]}" --port 53 \
        --local=/example.test/ \
        --host-record=www.example.test,198.51.100.80 \
        --host-record=dns.example.test,"${LAN_V4[dns]}","${LAN_V6[dns]}" \
        --log-queries --log-facility="$run/dnsmasq.log" >/dev/null
    # bounded readiness checks: dnsmasq answers, and each host reaches it through its resolver
    local i ok=0
    for ((i = 0; i < 50; i++)); do
        if [[ "$(ip netns exec "$prefix-dns" dig +short +time=1 +tries=1 @"${LAN_V4[dns]}" \
            dns.example.test A 2>/dev/null)" == "${LAN_V4[dns]}" ]]; then
            ok=1
            break
        fi
        local rec
        rec=$(recorded "$run" dnsmasq)
        # shellcheck disable=SC2086
        proc_alive $rec || {
            log_tail "$run/dnsmasq.stderr.log" "$run/dnsmasq.log"
            die "dnsmasq exited"
        }
        sleep 0.1
    done
    [[ $ok -eq 1 ]] || {
        log_tail "$run/dnsmasq.stderr.log" "$run/dnsmasq.log"
        die "dnsmasq in $prefix-dns does not answer"
    }
    for h in dc alice bob; do
        [[ "$(ip netns exec "$prefix-$h" dig +short +time=2 +tries=2 www.example.test A)" == 198.51.100.80 ]] ||
            die "$prefix-$h cannot resolve www.example.test through ${LAN_V4[dns]}"
    done
}

# ---------------------------------------------------------------------------------------------
# start / wait / restart-dc

need_lab() { # PREFIX -> checks the lab is up
    local run
    run=$(run_dir "$1")
    [[ -d $run ]] || die "lab '$1' is not up (no $run); run: $ME up lan $1"
    local h
    for h in "${LAN_HOSTS[@]}"; do
        ns_exists "$1-$h" || die "namespace $1-$h is missing; run: $ME down $1 && $ME up lan $1"
    done
}

need_bin() {
    [[ -n ${NTMTUN_BIN:-} ]] ||
        die "NTMTUN_BIN is not set: point it at the ntmtun binary (e.g. NTMTUN_BIN=target/release/ntmtun)"
    [[ -f $NTMTUN_BIN && -x $NTMTUN_BIN ]] ||
        die "NTMTUN_BIN='$NTMTUN_BIN' is not an executable file (build it: cargo build --release)"
    NTMTUN_BIN=$(realpath "$NTMTUN_BIN")
}

gen_key() { # RUN NAME -> writes RUN/NAME.key (0600) and RUN/NAME.pub
    local run=$1 name=$2 key pub
    key=$("$NTMTUN_BIN" keygen) || die "'$NTMTUN_BIN keygen' failed"
    key=$(printf '%s' "$key" | tr -d '[:space:]')
    [[ -n $key ]] || die "'$NTMTUN_BIN keygen' printed nothing"
    (umask 077 && printf '%s\n' "$key" >"$run/$name.key")
    pub=$("$NTMTUN_BIN" pubkey <"$run/$name.key") || die "'$NTMTUN_BIN pubkey' failed"
    pub=$(printf '%s' "$pub" | tr -d '[:space:]')
    [[ -n $pub ]] || die "'$NTMTUN_BIN pubkey' printed nothing"
    printf '%s\n' "$pub" >"$run/$name.pub"
}

write_private() { # FILE, content on stdin, mode 0600
    (umask 077 && cat >"$1")
    chmod 0600 "$1"
}

start_dc() { # PREFIX RUN
    local prefix=$1 run=$2
    local pid
    pid=$(start_bg "$run" dc "$prefix-dc" "$run/dc.out" "$run/dc.log" \
        env RUST_LOG="${RUST_LOG:-info}" "$NTMTUN_BIN" dc --config "$run/dc.toml")
    # bounded wait until the DC listens on its port (TCP or UDP)
    local i rec
    rec=$(recorded "$run" dc)
    for ((i = 0; i < 75; i++)); do
        # shellcheck disable=SC2086
        proc_alive $rec || {
            log_tail "$run/dc.log" "$run/dc.out"
            die "the DC (pid $pid) exited"
        }
        if ip netns exec "$prefix-dc" ss -Hlnut 2>/dev/null | awk '{print $5}' | grep -q ":$DC_PORT\$"; then
            return 0
        fi
        sleep 0.2
    done
    log_tail "$run/dc.log"
    die "the DC does not listen on port $DC_PORT after 15 s"
}

start_node() { # PREFIX RUN NAME
    rm -f -- "$2/$3.sock"
    start_bg "$2" "$3" "$1-$3" "$2/$3.out" "$2/$3.log" \
        env RUST_LOG="${RUST_LOG:-info}" "$NTMTUN_BIN" node --config "$2/$3.toml" >/dev/null
}

node_state() { # PREFIX RUN NAME -> dc.state or nothing
    ip netns exec "$1-$3" "$NTMTUN_BIN" status --socket "$2/$3.sock" --json 2>/dev/null |
        python3 -c 'import json,sys
try:
    print(json.load(sys.stdin)["dc"]["state"])
except Exception:
    pass' 2>/dev/null || true
}

cmd_wait() {
    [[ $# -ge 1 && $# -le 2 ]] || usage
    local prefix=$1 secs=${2:-15}
    validate_prefix "$prefix"
    [[ $secs =~ ^[0-9]{1,3}$ ]] || die "SECONDS must be a number (1-999)"
    need_root
    need_lab "$prefix"
    need_bin
    need_cmds python3
    wait_registered "$prefix" "$(run_dir "$prefix")" "$secs"
}

wait_registered() { # PREFIX RUN SECONDS
    local prefix=$1 run=$2 secs=$3 i n st all rec
    local -A state=()
    local deadline=$((SECONDS + secs))
    # bounded twice: by the clock and by the number of polls (every 0.2 s)
    for ((i = 0; i < secs * 5 && SECONDS <= deadline; i++)); do
        all=1
        for n in "${NODES[@]}"; do
            rec=$(recorded "$run" "$n")
            # shellcheck disable=SC2086
            if [[ -z $rec ]] || ! proc_alive $rec; then
                log_tail "$run/$n.log" "$run/$n.out" "$run/dc.log"
                die "node $n is not running"
            fi
            st=$(node_state "$prefix" "$run" "$n")
            state[$n]=${st:-no answer}
            [[ $st == registered ]] || all=0
        done
        if [[ $all -eq 1 ]]; then
            return 0
        fi
        sleep 0.2
    done
    for n in "${NODES[@]}"; do
        log "node $n: dc.state = ${state[$n]:-unknown}"
    done
    log_tail "$run/dc.log" "$run/alice.log" "$run/bob.log"
    die "nodes not registered after $secs s"
}

cmd_start() {
    [[ $# -eq 1 ]] || usage
    local prefix=$1
    validate_prefix "$prefix"
    need_root
    need_cmds ip ss python3 realpath
    need_lab "$prefix"
    need_bin
    local run
    run=$(run_dir "$prefix")
    local n rec
    for n in dc "${NODES[@]}"; do
        rec=$(recorded "$run" "$n")
        # shellcheck disable=SC2086
        if [[ -n $rec ]] && proc_alive $rec; then
            die "'$n' is already running in lab '$prefix'"
        fi
    done
    for n in dc "${NODES[@]}"; do
        gen_key "$run" "$n"
    done
    mkdir -p "$run/dc-state"
    chmod 0700 "$run/dc-state"
    write_private "$run/dc.toml" <<EOF
listen = ["${LAN_V4[dc]}:$DC_PORT", "[${LAN_V6[dc]}]:$DC_PORT"]
domain = "ntm.internal"
private_key = "$(cat "$run/dc.key")"
virtual_prefix = "198.18.0.0/15"
state_dir = "$run/dc-state"
auth_keys = ["$ENROLL_TOKEN"]
EOF
    for n in "${NODES[@]}"; do
        write_private "$run/$n.toml" <<EOF
name = "$n"
private_key = "$(cat "$run/$n.key")"
dc = "${LAN_V4[dc]}:$DC_PORT"
dc_public_key = "$(cat "$run/dc.pub")"
auth_key = "$ENROLL_TOKEN"
tun = "ntm0"
listen_port = 0
control_socket = "$run/$n.sock"

[dns]
mode = "capture"
EOF
    done
    start_dc "$prefix" "$run"
    for n in "${NODES[@]}"; do
        start_node "$prefix" "$run" "$n"
    done
    local secs=${NTMTUN_LAB_WAIT:-15}
    [[ $secs =~ ^[0-9]{1,3}$ ]] || die "NTMTUN_LAB_WAIT must be a number of seconds (1-999)"
    wait_registered "$prefix" "$run" "$secs"
    log "DC and nodes (${NODES[*]}) running and registered in lab '$prefix'"
}

cmd_restart_dc() {
    [[ $# -eq 1 ]] || usage
    local prefix=$1
    validate_prefix "$prefix"
    need_root
    need_cmds ip ss realpath
    need_lab "$prefix"
    need_bin
    local run
    run=$(run_dir "$prefix")
    [[ -f $run/dc.toml ]] || die "the DC was never started in lab '$prefix' (no $run/dc.toml)"
    stop_named "$run" dc
    echo "===== lab.sh restart-dc $(date -u +%FT%TZ) =====" >>"$run/dc.log"
    start_dc "$prefix" "$run"
    log "DC restarted in lab '$prefix' (pid $(recorded "$run" dc | awk '{print $1}'))"
}

# ---------------------------------------------------------------------------------------------
# spawn / stop / exec

cmd_spawn() {
    [[ $# -ge 4 ]] || usage
    local prefix=$1 host=$2 name=$3
    shift 3
    validate_prefix "$prefix"
    validate_host "$host"
    [[ $name =~ ^[a-z][a-z0-9_-]{0,31}$ ]] || die "invalid NAME '$name'"
    case $name in dc | alice | bob | dnsmasq) die "NAME '$name' is reserved" ;; esac
    need_root
    local run
    run=$(run_dir "$prefix")
    [[ -d $run ]] || die "lab '$prefix' is not up"
    ns_exists "$prefix-$host" || die "no namespace $prefix-$host"
    local rec
    rec=$(recorded "$run" "$name")
    # shellcheck disable=SC2086
    if [[ -n $rec ]] && proc_alive $rec; then die "'$name' is already running"; fi
    unrecord "$run" "$name"
    : >"$run/$name.out"
    : >"$run/$name.log"
    start_bg "$run" "$name" "$prefix-$host" "$run/$name.out" "$run/$name.log" "$@"
}

cmd_stop() {
    [[ $# -eq 2 ]] || usage
    validate_prefix "$1"
    need_root
    local run
    run=$(run_dir "$1")
    [[ -d $run ]] || die "lab '$1' is not up"
    stop_named "$run" "$2"
}

cmd_exec() {
    [[ $# -ge 3 ]] || usage
    local prefix=$1 host=$2
    shift 2
    validate_prefix "$prefix"
    validate_host "$host"
    exec ip netns exec "$prefix-$host" "$@"
}

# ---------------------------------------------------------------------------------------------
# down / list

cmd_down() {
    [[ $# -eq 1 ]] || usage
    local prefix=$1
    validate_prefix "$prefix"
    need_root
    local run ns
    run=$(run_dir "$prefix")
    # 1. every process recorded for this lab, by PID (verified by start time)
    if [[ -f $run/pids ]]; then
        # shellcheck disable=SC2046
        stop_pids $(awk 'NF == 3 {print $2, $3}' "$run/pids")
    fi
    # 2. anything still running inside this lab's namespaces (started by us, since we made them)
    local -a rest=()
    local pid start
    for ns in $(lab_namespaces "$prefix"); do
        for pid in $(ip netns pids "$ns" 2>/dev/null || true); do
            start=$(proc_starttime "$pid")
            [[ -n $start ]] && rest+=("$pid" "$start")
        done
    done
    if [[ ${#rest[@]} -gt 0 ]]; then
        log "stopping $((${#rest[@]} / 2)) leftover process(es) in $prefix-* namespaces"
        stop_pids "${rest[@]}"
    fi
    # 3. namespaces (their links go with them)
    for ns in $(lab_namespaces "$prefix"); do
        ip netns del "$ns" 2>/dev/null || log "warning: could not delete namespace $ns"
    done
    # 4. /etc/netns entries and the run dir
    local d
    for d in /etc/netns/"$prefix"-*; do
        [[ -e $d ]] && rm -rf -- "$d"
    done
    rmdir /etc/netns 2>/dev/null || true
    rm -rf -- "$run"
    rmdir "$LAB_ROOT" 2>/dev/null || true
    if [[ -n "$(lab_namespaces "$prefix")" ]]; then
        die "namespaces left behind: $(lab_namespaces "$prefix" | tr '\n' ' ')"
    fi
    return 0
}

cmd_list() {
    local d
    echo "run dirs:"
    for d in "$LAB_ROOT"/*/; do
        [[ -d $d ]] && echo "  $d"
    done
    echo "namespaces:"
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^[a-z][a-z0-9]{0,7}-(sw|dc|alice|bob|dns)$' |
        sed 's/^/  /' || true
}

main() {
    [[ $# -ge 1 ]] || usage
    local sub=$1
    shift
    case $sub in
    up) cmd_up "$@" ;;
    start) cmd_start "$@" ;;
    wait) cmd_wait "$@" ;;
    restart-dc) cmd_restart_dc "$@" ;;
    spawn) cmd_spawn "$@" ;;
    stop) cmd_stop "$@" ;;
    exec) cmd_exec "$@" ;;
    down) cmd_down "$@" ;;
    list) cmd_list ;;
    -h | --help | help) usage ;;
    *) usage ;;
    esac
}

main "$@"
