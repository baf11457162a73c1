#!/usr/bin/env bash
# ntmtun network lab: network namespaces, bridges, NAT routers, a DNS server and the ntmtun
# daemons.
#
# Safety (see shared/LAB.md): only namespaces named PREFIX-*, created here; only the
# documentation ranges (198.51.100.0/24, 203.0.113.0/24, 192.0.2.0/24, 2001:db8::/32); processes
# are killed by the PID recorded when they were started (checked against their start time, so a
# reused PID is never hit) or because they run inside one of this lab's namespaces; every wait
# is bounded. nftables rules and sysctls live inside the lab's namespaces and go with them.
#
# Usage:
#   lab.sh up TOPOLOGY PREFIX       build a topology: lan nat-nat same-nat public-nat symmetric
#                                   v4-v6 roam relay-failover hostile gateways fed office (sketched at the top of
#                                   lab.sh);
#                                   checks that every node reaches the DC and resolves names
#   lab.sh start PREFIX             keys, configs, start the DC, the relays (if the topology has
#                                   them and `$NTMTUN_BIN relay --help` works) and both nodes
#                                   (needs NTMTUN_BIN), then wait until both nodes are registered
#   lab.sh wait PREFIX [SECONDS]    wait until both nodes report dc.state "registered"
#   lab.sh restart-dc PREFIX        stop the DC (by PID) and start it again with the same config
#   lab.sh restart-node PREFIX NODE stop a node (by PID) and start it again with the same config
#   lab.sh kill-relay PREFIX RELAY  SIGKILL a relay started by `start` (by its recorded PID): a
#                                   crash, for failover tests
#   lab.sh move PREFIX HOST [1|2]   roam: move HOST's uplink to the other Internet segment (or to
#                                   segment 1 = 198.51.100.0/24, 2 = 203.0.113.0/24); prints the
#                                   new IPv4 address; the time it took goes to stderr and to
#                                   RUN/moves.log
#   lab.sh topology PREFIX          print the lab's topology name
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
# the daemons, default info), NTMTUN_LAB_WAIT (seconds `start` waits for registration, default 15
# plus one per node),
# NTMTUN_LAB_IO (written as `io = "..."` into every node.toml: auto, uring or epoll).
# Run dir: /tmp/ntmtun-lab/PREFIX/ (pids, logs, configs, keys; `topology`, `hosts`, `relays`).
#
# ---------------------------------------------------------------------------------------------
# Topologies. Every box is a namespace PREFIX-NAME; the segments and LANs are bridges in
# PREFIX-sw (br0 = Internet segment 1, br1 = Internet segment 2, lana/lanb = LANs). In every
# host namespace eth0 is the uplink (on routers: eth0 = WAN/segment 1, eth1 = LAN/segment 2).
# Servers: dc .10 (DC, UDP 7446), relay1 .20 and relay2 .21 (relays, UDP 7447), dns .53
# (dnsmasq, zone example.test); all dual-stack: 198.51.100.X + 2001:db8:100::X.
# Every host has /etc/netns/NS/resolv.conf -> 198.51.100.53 (IPv6-only hosts: 2001:db8:100::53).
# RUN/hosts lists "NAME ROLE V4 V6 PUBLIC_V4" ("-" = none); PUBLIC_V4 is what the Internet sees.
#
# lan: one segment, no NAT, no relay (the original lab; nodes dual-stack).
#     dc .10   alice .11   bob .12   dns .53
#       |         |          |         |
#     ==+=========+==========+=========+==  br0 198.51.100.0/24, 2001:db8:100::/64
#
# nat-nat: each node IPv4-only in its own LAN behind its own NAT router. The routers masquerade
# (endpoint-independent mapping: one public port for all destinations; conntrack filtering is
# address-and-port dependent) and DROP unsolicited packets to themselves and unsolicited
# forwards from the WAN (as home routers do; see LAB.md: without it an early peer probe makes
# masquerade move the mapping). No hairpinning.
#     dc .10   relay1 .20   dns .53          nata .101              natb .102
#       |          |          |            eth0 |                 eth0 |
#     ==+==========+==========+=================+=====================+==  br0 (Internet)
#                                          eth1 | 192.0.2.1/26    eth1 | 192.0.2.65/26
#                                     lana =====+======      lanb =====+======
#                                               |                      |
#                                    alice 192.0.2.11/26     bob 192.0.2.76/26
#                                    (default via .1)        (default via .65)
#
# same-nat: both nodes in one LAN behind nata (as nat-nat, no natb). The router does not
# hairpin (a LAN packet to 198.51.100.101 is not reflected back into the LAN): the nodes reach
# each other only on their LAN addresses. Two LAN hosts using the same source port to the same
# destination get different public ports (the second one is remapped).
#     dc .10   relay1 .20   dns .53    nata .101
#     ==+==========+==========+============+====  br0
#                                          | 192.0.2.1/26
#                              lana ==+====+=====+==
#                                     |          |
#                          alice 192.0.2.11   bob 192.0.2.12
#
# public-nat: alice dual-stack on the Internet segment, bob IPv4-only behind natb.
#     dc .10   relay1 .20   dns .53   alice .11 (+ ::11)   natb .102
#     ==+==========+==========+==========+====================+====  br0
#                                                             | 192.0.2.65/26
#                                                  lanb ======+======
#                                                             |
#                                                      bob 192.0.2.76
#
# symmetric: as nat-nat, but both routers use `masquerade random,fully-random`: a new random
# public port for every destination address:port (address-and-port-dependent mapping), stable
# for that destination while the conntrack entry lives. Hole punching cannot work.
#
# relay-failover: as symmetric, plus a second relay relay2 198.51.100.21 / 2001:db8:100::21.
#
# v4-v6: alice IPv4-only (198.51.100.11; IPv6 disabled by sysctl in her namespace, not even
# ::1), bob IPv6-only (2001:db8:100::12, no IPv4 address but 127.0.0.1; resolver
# 2001:db8:100::53). DC, relay1, dns dual-stack. One segment, no router.
#     dc .10/::10   relay1 .20/::20   dns .53/::53   alice 198.51.100.11   bob 2001:db8:100::12
#     ======+===============+===============+===============+====================+=====  br0
#
# roam: two Internet segments joined by the router `core` (.1 on both, IPv4 and IPv6, plain
# forwarding, no NAT, no filter). Every host has default routes via its segment's .1. bob has
# one veth on each segment; only one is up and addressed at a time. He starts on segment 2.
#     dc .10   relay1 .20   dns .53   alice .11        core
#     ==+==========+==========+==========+=======+=====eth0 198.51.100.1, 2001:db8:100::1
#       br0 198.51.100.0/24, 2001:db8:100::/64   :      |
#                                      (bob eth0: down) |  forwards v4 + v6
#       br1 203.0.113.0/24, 2001:db8:203::/64           |
#     ============================+=====================eth1 203.0.113.1, 2001:db8:203::1
#                                 |
#                   bob eth1 203.0.113.12, 2001:db8:203::12
# gateways: subnet routing. As nat-nat, but the nodes are the gateways gwa and gwb, each with
# a second interface (eth1) into a LAN of plain hosts that run no ntmtun: hosta behind gwa,
# hostb behind gwb, default routes via their gateway. The gateways do not forward until ntmtun
# turns ip_forward on. `start` grants gwa 192.0.2.128/27 and gwb 192.0.2.160/27 in dc.toml;
# gwa advertises its LAN plus 192.0.2.192/27 (not granted: refused) with snat = true, gwb
# advertises its LAN without snat.
#     dc .10   relay1 .20   dns .53          nata .101              natb .102
#     ==+==========+==========+=================+=====================+==  br0 (Internet)
#                                          eth1 | 192.0.2.1/26    eth1 | 192.0.2.65/26
#                                     lana =====+======      lanb =====+======
#                                               |                      |
#                                  gwa eth0 192.0.2.11/26    gwb eth0 192.0.2.76/26
#                                      eth1 192.0.2.129/27       eth1 192.0.2.161/27
#                                     lanc =====+======      land =====+======
#                                               |                      |
#                                  hosta 192.0.2.130/27      hostb 192.0.2.162/27
#                                  (default via .129)        (default via .161)
#
# `lab.sh move PREFIX bob` runs one `ip -batch` in bob's namespace: flush the addresses of the
# current uplink and set it down (its routes go with it), set the other uplink up, add
# 198.51.100.12/24 + 2001:db8:100::12/64 (nodad; or 203.0.113.12 + 2001:db8:203::12) and the
# default routes via that segment's .1. Like a phone switching from one network to another:
# the old interface disappears, sockets bound to the old address break, the new one works at
# once (no DAD). The switch itself takes a few milliseconds.
#
# fed: DC federation. Two DCs of two domains on one segment, no NAT: dc .10 serves
# x.ntm.internal (virtual_prefix 198.18.0.0/16) and finds dc2 with the DNS SRV record
# _ntmtun._udp.y.ntm.internal -> dc2.example.test:7446 (served by dnsmasq, A/AAAA .13);
# dc2 .13 serves y.ntm.internal (198.19.0.0/16) and has dc's address in its [[federation]]
# entry. alice registers with dc, bob with dc2; alice.x.ntm.internal <-> bob.y.ntm.internal.
# dc has two relays (relay1, relay2) for pairs across the domains that its nodes start.
#     dc .10   alice .11   bob .12   dc2 .13   relay1 .20   relay2 .21   dns .53
#     ==+=========+==========+==========+==========+============+===========+==  br0 (dual-stack)
#
# What `start` writes (RUN/*.toml): dc.toml listens on 198.51.100.10 and 2001:db8:100::10 port
# 7446 and, when relays run, has one [[relays]] entry per relay and address family (same key).
# RELAY.toml listens on the relay's two addresses, port 7447, with the DC's public key. Relays
# are started only if the topology has them and `$NTMTUN_BIN relay --help` succeeds; RUN/relays
# lists those started. NODE.toml: `dc` lists the DC's addresses in the node's families (both for
# dual-stack nodes), `[dns] mode = "capture"` with `resolvers` = its resolv.conf nameserver.
# lan keeps the node config it always had (dc = "198.51.100.10:7446", resolvers from
# resolv.conf), which tests/lab_lan.rs was written against. gateways adds `advertise_routes`
# (and `snat`) to the gateways' configs and `[[route_grants]]` to dc.toml (see its sketch).
#
# office: the mesh at the size of an office (25 nodes, 2 relays). Five dual-stack nodes on the
# Internet segment (p01-p05 .31-.35), two IPv6-only ones (v01, v02 ::41, ::42), and six
# IPv4-only nodes behind each of three NAT routers: nata (.101, lana 192.0.2.0/26, a01-a06
# .11-.16) and natb (.102, lanb 192.0.2.64/26, b01-b06 .75-.80) endpoint-independent, natc
# (.103, lanc 192.0.2.128/26 via .129, c01-c06 .139-.144) symmetric. relay1 and relay2 carry
# the pairs that cannot go direct (symmetric <-> NATed, IPv4-only <-> IPv6-only).
#
# hostile: everyone public on one segment (nodes dual-stack, as in lan), with relay1, plus the
# attacker `hostile` .66 / ::66. No ntmtun runs there: tests send forged, replayed and malformed
# datagrams from it (scripts/hostile.py), from its own address or spoofing another host's.
#     dc .10   relay1 .20   dns .53   alice .11   bob .12   hostile .66
#     ==+==========+==========+==========+==========+==========+====  br0

set -euo pipefail

LAB_ROOT=/tmp/ntmtun-lab
ME=${0##*/}

# The "lan" topology: one Internet segment.
declare -A LAN_V4=([dc]=198.51.100.10 [alice]=198.51.100.11 [bob]=198.51.100.12 [dns]=198.51.100.53)
declare -A LAN_V6=([dc]=2001:db8:100::10 [alice]=2001:db8:100::11 [bob]=2001:db8:100::12 [dns]=2001:db8:100::53)
LAN_HOSTS=(dc alice bob dns)
NODES=(alice bob)
DC_PORT=7446
RELAY_PORT=7447
ENROLL_TOKEN=lab-enrollment-token
METRICS_PORT=9100 # every daemon, on its namespace's loopback

TOPOLOGIES="lan nat-nat same-nat public-nat symmetric v4-v6 roam relay-failover hostile gateways fed office"
# Host numbers on the Internet segments (segment 1: 198.51.100.N + 2001:db8:100::N, segment 2:
# 203.0.113.N + 2001:db8:203::N).
declare -A HOSTNUM=([core]=1 [dc]=10 [alice]=11 [bob]=12 [relay1]=20 [relay2]=21 [dns]=53
    [nata]=101 [natb]=102 [natc]=103 [hostile]=66 [dc2]=13
    [p01]=31 [p02]=32 [p03]=33 [p04]=34 [p05]=35 [v01]=41 [v02]=42)
SEG1_V4=198.51.100
SEG1_V6=2001:db8:100:
SEG2_V4=203.0.113
SEG2_V6=2001:db8:203:
DNS_V4=198.51.100.53
DNS_V6=2001:db8:100::53
# The LANs behind the NAT routers.
LANA_GW=192.0.2.1
LANB_GW=192.0.2.65
LANC_GW=192.0.2.129
declare -A LANA_ADDR=([alice]=192.0.2.11 [bob]=192.0.2.12 [gwa]=192.0.2.11)
declare -A LANB_ADDR=([bob]=192.0.2.76 [gwb]=192.0.2.76)
# office: five public dual-stack nodes, two IPv6-only ones, and six behind each of three NATs
# (nata and natb endpoint-independent, natc symmetric).
OFFICE_PUBLIC="p01 p02 p03 p04 p05"
OFFICE_V6ONLY="v01 v02"
OFFICE_LANA="a01 a02 a03 a04 a05 a06"
OFFICE_LANB="b01 b02 b03 b04 b05 b06"
OFFICE_LANC="c01 c02 c03 c04 c05 c06"
office_lan_addr() { # NODE -> its LAN address (a0N: 192.0.2.1N, b0N: .7N, c0N: .14N)
    local k=${1:2:1}
    case $1 in
    a*) echo "192.0.2.$((10 + k))" ;;
    b*) echo "192.0.2.$((74 + k))" ;;
    c*) echo "192.0.2.$((138 + k))" ;;
    esac
}
# gateways: the LANs behind the gateways (gateway .129/.161, plain host .130/.162)
GWA_LAN=192.0.2.128/27
GWB_LAN=192.0.2.160/27
GWA_REFUSED=192.0.2.192/27

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
    [[ ${1:-} =~ ^[a-z][a-z0-9]{0,6}$ ]] || die "invalid HOST '${1:-}'"
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
# What each topology is made of.

topo_hosts() { # TOPO -> the host namespaces (besides PREFIX-sw)
    case $1 in
    lan) echo dc alice bob dns ;;
    nat-nat | symmetric) echo dc relay1 dns nata natb alice bob ;;
    relay-failover) echo dc relay1 relay2 dns nata natb alice bob ;;
    same-nat) echo dc relay1 dns nata alice bob ;;
    public-nat) echo dc relay1 dns natb alice bob ;;
    v4-v6) echo dc relay1 dns alice bob ;;
    roam) echo dc relay1 dns core alice bob ;;
    hostile) echo dc relay1 dns alice bob hostile ;;
    gateways) echo dc relay1 dns nata natb gwa gwb hosta hostb ;;
    fed) echo dc dc2 relay1 relay2 dns alice bob ;;
    office) echo dc relay1 relay2 dns nata natb natc "$(topo_nodes office)" ;;
    *) return 1 ;;
    esac
}

topo_nodes() { # TOPO -> the ntmtun nodes it runs
    case $1 in
    gateways) echo gwa gwb ;;
    office) echo $OFFICE_PUBLIC $OFFICE_V6ONLY $OFFICE_LANA $OFFICE_LANB $OFFICE_LANC ;;
    *) echo alice bob ;;
    esac
}

topo_relays() { # TOPO -> the relays it has
    case $1 in
    lan) ;;
    relay-failover | fed | office) echo relay1 relay2 ;;
    *) echo relay1 ;;
    esac
}

node_family() { # TOPO NODE -> 4 (IPv4-only), 6 (IPv6-only) or 46 (dual-stack)
    case $1:$2 in
    lan:* | roam:* | hostile:* | public-nat:alice | fed:* | office:p*) echo 46 ;;
    office:v*) echo 6 ;;
    v4-v6:alice) echo 4 ;;
    v4-v6:bob) echo 6 ;;
    *) echo 4 ;; # behind a NAT: IPv4-only LANs
    esac
}

lab_topology() { # PREFIX -> the topology recorded by `up`
    local f
    f="$(run_dir "$1")/topology"
    [[ -f $f ]] || die "lab '$1' is not up (no $f)"
    cat "$f"
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
    topo_hosts "$topo" >/dev/null || die "unknown topology '$topo' (available: $TOPOLOGIES)"
    [[ $topo == lan ]] || need_cmds nft ping sysctl
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
    if [[ $topo == lan ]]; then
        up_lan "$prefix" "$run"
    else
        up_wan "$prefix" "$run" "$topo"
    fi
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

note_host() { # RUN NAME ROLE V4 V6 PUBLIC_V4 ("-" for none): a line of RUN/hosts
    echo "$2 $3 $4 $5 $6" >>"$1/hosts"
}

# an ordinary DNS server for the test zone example.test, in PREFIX-dns, on both families
start_dnsmasq() { # PREFIX RUN
    local prefix=$1 run=$2
    start_bg "$run" dnsmasq "$prefix-dns" "$run/dnsmasq.out" "$run/dnsmasq.stderr.log" \
        dnsmasq --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
        --listen-address="$DNS_V4" --listen-address="$DNS_V6" --port 53 \
        --local=/example.test/ \
        --host-record=www.example.test,198.51.100.80 \
        --host-record=dns.example.test,"$DNS_V4","$DNS_V6" \
        --host-record=dc2.example.test,"$SEG1_V4.${HOSTNUM[dc2]}","$SEG1_V6:${HOSTNUM[dc2]}" \
        --srv-host=_ntmtun._udp.y.ntm.internal,dc2.example.test,"$DC_PORT" \
        --log-queries --log-facility="$run/dnsmasq.log" >/dev/null
    # bounded readiness check: dnsmasq answers
    local i ok=0 rec
    for ((i = 0; i < 50; i++)); do
        if [[ "$(ip netns exec "$prefix-dns" dig +short +time=1 +tries=1 @"$DNS_V4" \
            dns.example.test A 2>/dev/null)" == "$DNS_V4" ]]; then
            ok=1
            break
        fi
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
        note_host "$run" "$h" "$([[ $h == dc || $h == dns ]] && echo "$h" || echo node)" \
            "${LAN_V4[$h]}" "${LAN_V6[$h]}" "${LAN_V4[$h]}"
    done
    # the namespaces' resolver (bind-mounted over /etc/resolv.conf by `ip netns exec`)
    for h in dc alice bob; do
        mkdir -p "/etc/netns/$prefix-$h"
        printf 'nameserver %s\n' "${LAN_V4[dns]}" >"/etc/netns/$prefix-$h/resolv.conf"
    done
    start_dnsmasq "$prefix" "$run"
    # bounded readiness check: each host reaches dnsmasq through its resolver
    for h in dc alice bob; do
        [[ "$(ip netns exec "$prefix-$h" dig +short +time=2 +tries=2 www.example.test A)" == 198.51.100.80 ]] ||
            die "$prefix-$h cannot resolve www.example.test through ${LAN_V4[dns]}"
    done
}

# --- building blocks of the other topologies ---

new_ns() { # PREFIX HOST: an empty namespace; new interfaces get no RA, no DAD
    local ns="$1-$2"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -q -w net.ipv6.conf.default.accept_ra=0 \
        net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_dad=0
}

add_bridge() { # PREFIX BRIDGE
    ip -n "$1-sw" link add "$2" type bridge stp_state 0 mcast_snooping 0
    ip -n "$1-sw" link set "$2" up
}

# A veth from the switch's BRIDGE (switch side named HOST-IFNAME) to IFNAME in PREFIX-HOST. The
# host side stays down until if_up.
plug() { # PREFIX HOST IFNAME BRIDGE
    local sw="$1-sw" port="$2-$3"
    ip -n "$sw" link add "$port" type veth peer name "$3" netns "$1-$2"
    ip -n "$sw" link set "$port" master "$4"
    ip -n "$sw" link set "$port" up
}

if_up() { # PREFIX HOST IFNAME [ADDR/LEN...]: addresses (IPv6 without DAD), then link up
    local ns="$1-$2" dev=$3 a
    shift 3
    for a in "$@"; do
        if [[ $a == *:* ]]; then
            ip -n "$ns" addr add "$a" dev "$dev" nodad
        else
            ip -n "$ns" addr add "$a" dev "$dev"
        fi
    done
    ip -n "$ns" link set "$dev" up
}

default_via() { # PREFIX HOST GW4|- GW6|-
    [[ $3 == - ]] || ip -n "$1-$2" route add default via "$3"
    [[ $4 == - ]] || ip -n "$1-$2" -6 route add default via "$4"
}

set_resolver() { # PREFIX HOST NAMESERVER
    mkdir -p "/etc/netns/$1-$2"
    printf 'nameserver %s\n' "$3" >"/etc/netns/$1-$2/resolv.conf"
}

# A dual-stack (or single-stack, FAMILY 4 / 6) host on Internet segment 1.
public_host() { # PREFIX RUN HOST ROLE FAMILY
    local prefix=$1 run=$2 h=$3 role=$4 fam=$5 n=${HOSTNUM[$3]}
    local v4=- v6=-
    local -a addrs=()
    new_ns "$prefix" "$h"
    if [[ $fam == 4 ]]; then
        # IPv4-only: IPv6 off before the veth exists (it inherits "default"), and everywhere
        ip netns exec "$prefix-$h" sysctl -q -w net.ipv6.conf.default.disable_ipv6=1 \
            net.ipv6.conf.all.disable_ipv6=1
    fi
    plug "$prefix" "$h" eth0 br0
    if [[ $fam == *4* ]]; then
        v4=$SEG1_V4.$n
        addrs+=("$v4/24")
    fi
    if [[ $fam == *6* ]]; then
        v6=$SEG1_V6:$n
        addrs+=("$v6/64")
    fi
    if_up "$prefix" "$h" eth0 "${addrs[@]}"
    if [[ $fam == 4 ]]; then
        ip netns exec "$prefix-$h" sysctl -q -w net.ipv6.conf.eth0.disable_ipv6=1
    fi
    note_host "$run" "$h" "$role" "$v4" "$v6" "$v4"
}

# A NAT router: eth0 on the Internet segment (198.51.100.N, IPv4 only), eth1 = LAN gateway.
# MODE eim: plain masquerade (keeps the source port when it can: the same public port for every
# destination); symmetric: masquerade random,fully-random (a new public port per destination).
# Either way the router drops what arrives on eth0 unsolicited, for itself or to forward.
nat_router() { # PREFIX RUN NAME LANBRIDGE GW MODE
    local prefix=$1 run=$2 r=$3 masq=masquerade
    new_ns "$prefix" "$r"
    plug "$prefix" "$r" eth0 br0
    if_up "$prefix" "$r" eth0 "$SEG1_V4.${HOSTNUM[$r]}/24"
    plug "$prefix" "$r" eth1 "$4"
    if_up "$prefix" "$r" eth1 "$5/26"
    ip netns exec "$prefix-$r" sysctl -q -w net.ipv4.ip_forward=1
    if [[ $6 == symmetric ]]; then masq="masquerade random,fully-random"; fi
    ip netns exec "$prefix-$r" nft -f - <<NFT
table ip ntmlab {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth0" $masq
    }
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "eth0" ct state established,related accept
        iifname "eth0" counter drop comment "unsolicited, to the router itself"
    }
    chain forward {
        type filter hook forward priority filter; policy accept;
        iifname "eth0" ct state established,related accept
        iifname "eth0" counter drop comment "unsolicited, from the Internet to the LAN"
    }
}
NFT
    note_host "$run" "$r" "nat-$6" "$SEG1_V4.${HOSTNUM[$r]}" - "$SEG1_V4.${HOSTNUM[$r]}"
}

# An IPv4-only node in the LAN behind ROUTER.
lan_host() { # PREFIX RUN NODE LANBRIDGE ADDR GW ROUTER
    local prefix=$1 run=$2 h=$3
    new_ns "$prefix" "$h"
    plug "$prefix" "$h" eth0 "$4"
    if_up "$prefix" "$h" eth0 "$5/26"
    default_via "$prefix" "$h" "$6" -
    note_host "$run" "$h" node "$5" - "$SEG1_V4.${HOSTNUM[$7]}"
}

# gateways: a node that is also the router of a LAN of plain hosts: eth0 into its NAT's LAN
# (default route), eth1 = LANADDR/27. Forwarding stays off: ntmtun turns it on.
gateway_host() { # PREFIX RUN NODE UPBRIDGE UPADDR UPGW LANBRIDGE LANADDR ROUTER
    local prefix=$1 run=$2 h=$3
    lan_host "$prefix" "$run" "$h" "$4" "$5" "$6" "$9"
    plug "$prefix" "$h" eth1 "$7"
    if_up "$prefix" "$h" eth1 "$8/27"
    ip netns exec "$prefix-$h" sysctl -q -w net.ipv4.ip_forward=0
}

# gateways: a plain host (no ntmtun) in a gateway's LAN.
plain_host() { # PREFIX RUN HOST LANBRIDGE ADDR GW
    local prefix=$1 run=$2 h=$3
    new_ns "$prefix" "$h"
    plug "$prefix" "$h" eth0 "$4"
    if_up "$prefix" "$h" eth0 "$5/27"
    default_via "$prefix" "$h" "$6" -
    note_host "$run" "$h" host "$5" - -
}

# roam: the router between the two Internet segments.
core_router() { # PREFIX RUN
    local prefix=$1 run=$2
    new_ns "$prefix" core
    plug "$prefix" core eth0 br0
    if_up "$prefix" core eth0 "$SEG1_V4.1/24" "$SEG1_V6:1/64"
    plug "$prefix" core eth1 br1
    if_up "$prefix" core eth1 "$SEG2_V4.1/24" "$SEG2_V6:1/64"
    ip netns exec "$prefix-core" sysctl -q -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    note_host "$run" core router "$SEG1_V4.1" "$SEG1_V6:1" "$SEG1_V4.1"
}

# roam: a dual-stack host with one veth per segment (eth0 on 1, eth1 on 2), up on SEGMENT.
roam_host() { # PREFIX RUN HOST SEGMENT
    local prefix=$1 run=$2 h=$3
    new_ns "$prefix" "$h"
    plug "$prefix" "$h" eth0 br0
    plug "$prefix" "$h" eth1 br1
    move_to "$prefix" "$run" "$h" "$4" >/dev/null
}

seg_addrs() { # SEGMENT HOST -> "IFNAME V4 V6 GW4 GW6" of HOST on that segment
    local n=${HOSTNUM[$2]}
    case $1 in
    1) echo "eth0 $SEG1_V4.$n $SEG1_V6:$n $SEG1_V4.1 $SEG1_V6:1" ;;
    2) echo "eth1 $SEG2_V4.$n $SEG2_V6:$n $SEG2_V4.1 $SEG2_V6:1" ;;
    esac
}

# Put HOST's uplink on SEGMENT in one `ip -batch`: the other uplink loses its addresses and goes
# down (its routes go with it), this one comes up with its addresses and default routes.
# Prints the elapsed milliseconds.
move_to() { # PREFIX RUN HOST SEGMENT
    local prefix=$1 run=$2 h=$3 seg=$4 old dev v4 v6 gw4 gw6 t0 t1
    old=$((3 - seg))
    read -r dev v4 v6 gw4 gw6 <<<"$(seg_addrs "$seg" "$h")"
    local olddev
    olddev=$(seg_addrs "$old" "$h" | awk '{print $1}')
    t0=$(date +%s%N)
    ip -n "$prefix-$h" -batch - <<BATCH
addr flush dev $olddev
link set $olddev down
link set $dev up
addr add $v4/24 dev $dev
addr add $v6/64 dev $dev nodad
route add 0.0.0.0/0 via $gw4 dev $dev
route add ::/0 via $gw6 dev $dev
BATCH
    t1=$(date +%s%N)
    echo "$seg" >"$run/$h.segment"
    local tmp
    tmp=$(mktemp "$run/hosts.XXXXXX")
    awk -v n="$h" '$1 != n' "$run/hosts" >"$tmp" 2>/dev/null || true
    echo "$h node $v4 $v6 $v4" >>"$tmp"
    mv "$tmp" "$run/hosts"
    echo $(((t1 - t0) / 1000000))
}

up_wan() { # PREFIX RUN TOPO: every topology but lan
    local prefix=$1 run=$2 topo=$3 h mode=eim
    read -r -a NODES <<<"$(topo_nodes "$topo")"
    echo "$topo" >"$run/topology"
    : >"$run/hosts"
    new_ns "$prefix" sw
    add_bridge "$prefix" br0
    if [[ $topo == roam ]]; then add_bridge "$prefix" br1; fi
    case $topo in nat-nat | symmetric | relay-failover | same-nat | gateways | office) add_bridge "$prefix" lana ;; esac
    case $topo in nat-nat | symmetric | relay-failover | public-nat | gateways | office) add_bridge "$prefix" lanb ;; esac
    if [[ $topo == office ]]; then add_bridge "$prefix" lanc; fi
    if [[ $topo == gateways ]]; then
        add_bridge "$prefix" lanc
        add_bridge "$prefix" land
    fi
    # the servers, dual-stack, on Internet segment 1
    public_host "$prefix" "$run" dc dc 46
    for h in $(topo_relays "$topo"); do
        public_host "$prefix" "$run" "$h" relay 46
    done
    public_host "$prefix" "$run" dns dns 46
    case $topo in
    nat-nat | symmetric | relay-failover)
        [[ $topo == nat-nat ]] || mode=symmetric
        nat_router "$prefix" "$run" nata lana "$LANA_GW" "$mode"
        nat_router "$prefix" "$run" natb lanb "$LANB_GW" "$mode"
        lan_host "$prefix" "$run" alice lana "${LANA_ADDR[alice]}" "$LANA_GW" nata
        lan_host "$prefix" "$run" bob lanb "${LANB_ADDR[bob]}" "$LANB_GW" natb
        ;;
    same-nat)
        nat_router "$prefix" "$run" nata lana "$LANA_GW" eim
        lan_host "$prefix" "$run" alice lana "${LANA_ADDR[alice]}" "$LANA_GW" nata
        lan_host "$prefix" "$run" bob lana "${LANA_ADDR[bob]}" "$LANA_GW" nata
        ;;
    public-nat)
        public_host "$prefix" "$run" alice node 46
        nat_router "$prefix" "$run" natb lanb "$LANB_GW" eim
        lan_host "$prefix" "$run" bob lanb "${LANB_ADDR[bob]}" "$LANB_GW" natb
        ;;
    v4-v6)
        public_host "$prefix" "$run" alice node 4
        public_host "$prefix" "$run" bob node 6
        ;;
    hostile)
        public_host "$prefix" "$run" alice node 46
        public_host "$prefix" "$run" bob node 46
        public_host "$prefix" "$run" hostile hostile 46
        ;;
    gateways)
        nat_router "$prefix" "$run" nata lana "$LANA_GW" eim
        nat_router "$prefix" "$run" natb lanb "$LANB_GW" eim
        gateway_host "$prefix" "$run" gwa lana "${LANA_ADDR[gwa]}" "$LANA_GW" lanc 192.0.2.129 nata
        gateway_host "$prefix" "$run" gwb lanb "${LANB_ADDR[gwb]}" "$LANB_GW" land 192.0.2.161 natb
        plain_host "$prefix" "$run" hosta lanc 192.0.2.130 192.0.2.129
        plain_host "$prefix" "$run" hostb land 192.0.2.162 192.0.2.161
        ;;
    fed)
        public_host "$prefix" "$run" dc2 dc 46
        public_host "$prefix" "$run" alice node 46
        public_host "$prefix" "$run" bob node 46
        ;;
    office)
        for h in $OFFICE_PUBLIC; do public_host "$prefix" "$run" "$h" node 46; done
        for h in $OFFICE_V6ONLY; do public_host "$prefix" "$run" "$h" node 6; done
        nat_router "$prefix" "$run" nata lana "$LANA_GW" eim
        nat_router "$prefix" "$run" natb lanb "$LANB_GW" eim
        nat_router "$prefix" "$run" natc lanc "$LANC_GW" symmetric
        for h in $OFFICE_LANA; do lan_host "$prefix" "$run" "$h" lana "$(office_lan_addr "$h")" "$LANA_GW" nata; done
        for h in $OFFICE_LANB; do lan_host "$prefix" "$run" "$h" lanb "$(office_lan_addr "$h")" "$LANB_GW" natb; done
        for h in $OFFICE_LANC; do lan_host "$prefix" "$run" "$h" lanc "$(office_lan_addr "$h")" "$LANC_GW" natc; done
        ;;
    roam)
        core_router "$prefix" "$run"
        public_host "$prefix" "$run" alice node 46
        for h in dc $(topo_relays "$topo") dns alice; do
            default_via "$prefix" "$h" "$SEG1_V4.1" "$SEG1_V6:1"
        done
        roam_host "$prefix" "$run" bob 2
        ;;
    esac
    # resolvers (bind-mounted over /etc/resolv.conf by `ip netns exec`)
    for h in $(topo_hosts "$topo"); do
        if [[ $(node_family "$topo" "$h") == 6 ]]; then
            set_resolver "$prefix" "$h" "$DNS_V6"
        else
            set_resolver "$prefix" "$h" "$DNS_V4"
        fi
    done
    start_dnsmasq "$prefix" "$run"
    [[ "$(ip netns exec "$prefix-dns" dig +short +time=1 +tries=3 @"$DNS_V6" dns.example.test A 2>/dev/null)" == "$DNS_V4" ]] ||
        die "dnsmasq in $prefix-dns does not answer on $DNS_V6"
    # bounded checks: each node reaches the DC on each of its families, and resolves names
    local fam
    for h in "${NODES[@]}"; do
        fam=$(node_family "$topo" "$h")
        if [[ $fam == *4* ]]; then
            ip netns exec "$prefix-$h" ping -n -q -c 1 -W 3 "$SEG1_V4.10" >/dev/null ||
                die "$prefix-$h cannot ping the DC at $SEG1_V4.10"
        fi
        if [[ $fam == *6* ]]; then
            ip netns exec "$prefix-$h" ping -n -q -c 1 -W 3 "$SEG1_V6:10" >/dev/null ||
                die "$prefix-$h cannot ping the DC at $SEG1_V6:10"
        fi
    done
    for h in dc $(topo_relays "$topo") "${NODES[@]}"; do
        [[ "$(ip netns exec "$prefix-$h" dig +short +time=2 +tries=2 www.example.test A)" == 198.51.100.80 ]] ||
            die "$prefix-$h cannot resolve www.example.test through its resolver"
    done
}

# ---------------------------------------------------------------------------------------------
# start / wait / restart-dc / kill-relay / move / topology

relay_entries() { # RUN RELAY...: dc.toml's [[relays]], one per relay and family, one key
    local run=$1 n
    shift
    for n in "$@"; do
        cat <<EOT

[[relays]]
address = "$SEG1_V4.${HOSTNUM[$n]}:$RELAY_PORT"
public_key = "$(cat "$run/$n.pub")"

[[relays]]
address = "[$SEG1_V6:${HOSTNUM[$n]}]:$RELAY_PORT"
public_key = "$(cat "$run/$n.pub")"
EOT
    done
}

write_relay_configs() { # RUN RELAY...: each relay's toml, on both families, under dc's key
    local run=$1 n
    shift
    for n in "$@"; do
        write_private "$run/$n.toml" <<EOT
listen = ["$SEG1_V4.${HOSTNUM[$n]}:$RELAY_PORT", "[$SEG1_V6:${HOSTNUM[$n]}]:$RELAY_PORT"]
private_key = "$(cat "$run/$n.key")"
dc_public_key = "$(cat "$run/dc.pub")"
metrics_listen = "127.0.0.1:$METRICS_PORT"
EOT
    done
}

need_lab() { # PREFIX -> checks the lab is up (all the namespaces of its topology exist)
    local run topo h
    run=$(run_dir "$1")
    [[ -d $run ]] || die "lab '$1' is not up (no $run); run: $ME up TOPOLOGY $1"
    topo=$(lab_topology "$1")
    for h in sw $(topo_hosts "$topo"); do
        ns_exists "$1-$h" || die "namespace $1-$h is missing; run: $ME down $1 && $ME up $topo $1"
    done
    read -r -a NODES <<<"$(topo_nodes "$topo")"
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

# Bounded wait (15 s) until the process recorded as NAME listens on PORT (TCP or UDP) in NS.
wait_listening() { # PREFIX RUN NAME NS PORT WHAT
    local prefix=$1 run=$2 name=$3 ns=$4 port=$5 what=$6 i rec
    rec=$(recorded "$run" "$name")
    for ((i = 0; i < 75; i++)); do
        # shellcheck disable=SC2086
        proc_alive $rec || {
            log_tail "$run/$name.log" "$run/$name.out"
            die "$what (pid ${rec%% *}) exited"
        }
        if ip netns exec "$ns" ss -Hlnut 2>/dev/null | awk '{print $5}' | grep -q ":$port\$"; then
            return 0
        fi
        sleep 0.2
    done
    log_tail "$run/$name.log"
    die "$what does not listen on port $port after 15 s"
}

start_dc() { # PREFIX RUN
    local prefix=$1 run=$2
    start_bg "$run" dc "$prefix-dc" "$run/dc.out" "$run/dc.log" \
        env RUST_LOG="${RUST_LOG:-info}" "$NTMTUN_BIN" dc --config "$run/dc.toml" >/dev/null
    wait_listening "$prefix" "$run" dc "$prefix-dc" "$DC_PORT" "the DC"
}

start_relay() { # PREFIX RUN NAME
    local prefix=$1 run=$2 name=$3
    start_bg "$run" "$name" "$prefix-$name" "$run/$name.out" "$run/$name.log" \
        env RUST_LOG="${RUST_LOG:-info}" "$NTMTUN_BIN" relay --config "$run/$name.toml" >/dev/null
    wait_listening "$prefix" "$run" "$name" "$prefix-$name" "$RELAY_PORT" "relay $name"
}

# Does this binary have the relay role? (bounded: 10 s)
relay_supported() {
    timeout -k 2 10 "$NTMTUN_BIN" relay --help >/dev/null 2>&1
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
    local -a logs=()
    for n in "${NODES[@]}"; do logs+=("$run/$n.log"); done
    log_tail "$run/dc.log" "${logs[@]}"
    die "nodes not registered after $secs s"
}

# The node's `dc` value: the DC's addresses in the families the node has.
node_dc_value() { # TOPO NODE
    local fam
    fam=$(node_family "$1" "$2")
    if [[ $1 == lan ]]; then
        # unchanged from the original lan lab (tests/lab_lan.rs was written against it)
        echo "\"${LAN_V4[dc]}:$DC_PORT\""
        return
    fi
    case $fam in
    4) echo "[\"$SEG1_V4.10:$DC_PORT\"]" ;;
    6) echo "[\"[$SEG1_V6:10]:$DC_PORT\"]" ;;
    *) echo "[\"$SEG1_V4.10:$DC_PORT\", \"[$SEG1_V6:10]:$DC_PORT\"]" ;;
    esac
}

node_gateway_keys() { # TOPO NODE -> subnet-routing keys of its node.toml (gateways only)
    case $1:$2 in
    gateways:gwa) printf 'advertise_routes = ["%s", "%s"]\nsnat = true\n' "$GWA_LAN" "$GWA_REFUSED" ;;
    gateways:gwb) printf 'advertise_routes = ["%s"]\n' "$GWB_LAN" ;;
    esac
}

node_resolver() { # TOPO NODE -> the nameserver of its resolv.conf
    if [[ $(node_family "$1" "$2") == 6 ]]; then echo "$DNS_V6"; else echo "$DNS_V4"; fi
}

cmd_start() {
    [[ $# -eq 1 ]] || usage
    local prefix=$1
    validate_prefix "$prefix"
    need_root
    need_cmds ip ss python3 realpath timeout
    need_lab "$prefix"
    need_bin
    local run topo
    run=$(run_dir "$prefix")
    topo=$(lab_topology "$prefix")
    if [[ $topo == fed ]]; then
        start_fed "$prefix" "$run"
        return
    fi
    local n rec
    local -a relays=() wanted
    read -r -a wanted <<<"$(topo_relays "$topo")"
    for n in dc "${wanted[@]}" "${NODES[@]}"; do
        rec=$(recorded "$run" "$n")
        # shellcheck disable=SC2086
        if [[ -n $rec ]] && proc_alive $rec; then
            die "'$n' is already running in lab '$prefix'"
        fi
    done
    if [[ ${#wanted[@]} -gt 0 ]]; then
        if relay_supported; then
            relays=("${wanted[@]}")
        else
            log "relays skipped: '$NTMTUN_BIN relay --help' failed (no relay role in this binary);" \
                "starting the DC and the nodes without relays (${wanted[*]} stay idle)"
        fi
    fi
    if [[ ${#relays[@]} -gt 0 ]]; then printf '%s\n' "${relays[@]}" >"$run/relays"; else : >"$run/relays"; fi
    for n in dc "${relays[@]}" "${NODES[@]}"; do
        gen_key "$run" "$n"
    done
    mkdir -p "$run/dc-state"
    chmod 0700 "$run/dc-state"
    {
        cat <<EOT
listen = ["$SEG1_V4.10:$DC_PORT", "[$SEG1_V6:10]:$DC_PORT"]
domain = "ntm.internal"
private_key = "$(cat "$run/dc.key")"
virtual_prefix = "198.18.0.0/15"
state_dir = "$run/dc-state"
auth_keys = ["$ENROLL_TOKEN"]
metrics_listen = "127.0.0.1:$METRICS_PORT"
EOT
        if [[ $topo == gateways ]]; then
            cat <<EOT

[[route_grants]]
node = "gwa"
prefixes = ["$GWA_LAN"]

[[route_grants]]
node = "gwb"
prefixes = ["$GWB_LAN"]
EOT
        fi
        relay_entries "$run" "${relays[@]}"
    } | write_private "$run/dc.toml"
    write_relay_configs "$run" "${relays[@]}"
    local resolvers="" io_line=""
    # NTMTUN_LAB_IO picks the nodes' IO shell (node key `io`), e.g. uring or epoll
    [[ -z ${NTMTUN_LAB_IO:-} ]] || io_line="io = \"$NTMTUN_LAB_IO\""
    for n in "${NODES[@]}"; do
        # lan keeps the resolver default (its resolv.conf); the others name it explicitly
        [[ $topo == lan ]] || resolvers="resolvers = [\"$(node_resolver "$topo" "$n")\"]"
        write_private "$run/$n.toml" <<EOT
name = "$n"
private_key = "$(cat "$run/$n.key")"
dc = $(node_dc_value "$topo" "$n")
dc_public_key = "$(cat "$run/dc.pub")"
auth_key = "$ENROLL_TOKEN"
tun = "ntm0"
listen_port = 0
control_socket = "$run/$n.sock"
metrics_listen = "127.0.0.1:$METRICS_PORT"
$(node_gateway_keys "$topo" "$n")
$io_line

[dns]
mode = "capture"
$resolvers
EOT
    done
    start_dc "$prefix" "$run"
    for n in "${relays[@]}"; do
        start_relay "$prefix" "$run" "$n"
    done
    for n in "${NODES[@]}"; do
        start_node "$prefix" "$run" "$n"
    done
    local secs=${NTMTUN_LAB_WAIT:-$((15 + ${#NODES[@]}))}
    [[ $secs =~ ^[0-9]{1,3}$ ]] || die "NTMTUN_LAB_WAIT must be a number of seconds (1-999)"
    wait_registered "$prefix" "$run" "$secs"
    log "DC${relays[*]:+, relays (${relays[*]})} and nodes (${NODES[*]}) running and registered in lab '$prefix' ($topo)"
}

# fed: dc serves x.ntm.internal and finds dc2 by DNS SRV; dc2 serves y.ntm.internal and has
# dc's address; alice registers with dc, bob with dc2; dc's relays are relay1 and relay2.
start_fed() { # PREFIX RUN
    local prefix=$1 run=$2 n rec
    local -a relays
    read -r -a relays <<<"$(topo_relays fed)"
    for n in dc dc2 "${relays[@]}" "${NODES[@]}"; do
        rec=$(recorded "$run" "$n")
        # shellcheck disable=SC2086
        if [[ -n $rec ]] && proc_alive $rec; then
            die "'$n' is already running in lab '$prefix'"
        fi
        gen_key "$run" "$n"
    done
    printf '%s\n' "${relays[@]}" >"$run/relays"
    mkdir -p "$run/dc-state" "$run/dc2-state"
    chmod 0700 "$run/dc-state" "$run/dc2-state"
    {
        cat <<EOT
listen = ["$SEG1_V4.10:$DC_PORT", "[$SEG1_V6:10]:$DC_PORT"]
domain = "x.ntm.internal"
private_key = "$(cat "$run/dc.key")"
virtual_prefix = "198.18.0.0/16"
state_dir = "$run/dc-state"
auth_keys = ["$ENROLL_TOKEN"]
metrics_listen = "127.0.0.1:$METRICS_PORT"

[[federation]]
domain = "y.ntm.internal"
public_key = "$(cat "$run/dc2.pub")"
EOT
        relay_entries "$run" "${relays[@]}"
    } | write_private "$run/dc.toml"
    write_relay_configs "$run" "${relays[@]}"
    write_private "$run/dc2.toml" <<EOT
listen = ["$SEG1_V4.${HOSTNUM[dc2]}:$DC_PORT", "[$SEG1_V6:${HOSTNUM[dc2]}]:$DC_PORT"]
domain = "y.ntm.internal"
private_key = "$(cat "$run/dc2.key")"
virtual_prefix = "198.19.0.0/16"
state_dir = "$run/dc2-state"
auth_keys = ["$ENROLL_TOKEN"]
metrics_listen = "127.0.0.1:$METRICS_PORT"

[[federation]]
domain = "x.ntm.internal"
address = "$SEG1_V4.10:$DC_PORT"
public_key = "$(cat "$run/dc.pub")"
EOT
    local dc_of
    for n in "${NODES[@]}"; do
        if [[ $n == alice ]]; then dc_of=dc; else dc_of=dc2; fi
        write_private "$run/$n.toml" <<EOT
name = "$n"
private_key = "$(cat "$run/$n.key")"
dc = "$SEG1_V4.${HOSTNUM[$dc_of]}:$DC_PORT"
dc_public_key = "$(cat "$run/$dc_of.pub")"
auth_key = "$ENROLL_TOKEN"
tun = "ntm0"
listen_port = 0
control_socket = "$run/$n.sock"
metrics_listen = "127.0.0.1:$METRICS_PORT"

[dns]
mode = "capture"
resolvers = ["$DNS_V4"]
EOT
    done
    start_dc "$prefix" "$run"
    start_bg "$run" dc2 "$prefix-dc2" "$run/dc2.out" "$run/dc2.log" \
        env RUST_LOG="${RUST_LOG:-info}" "$NTMTUN_BIN" dc --config "$run/dc2.toml" >/dev/null
    wait_listening "$prefix" "$run" dc2 "$prefix-dc2" "$DC_PORT" "the DC dc2"
    for n in "${relays[@]}"; do
        start_relay "$prefix" "$run" "$n"
    done
    for n in "${NODES[@]}"; do
        start_node "$prefix" "$run" "$n"
    done
    wait_registered "$prefix" "$run" "${NTMTUN_LAB_WAIT:-15}"
    log "DCs (dc: x.ntm.internal, dc2: y.ntm.internal), relays (${relays[*]}) and nodes running and registered in lab '$prefix' (fed)"
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

cmd_restart_node() {
    [[ $# -eq 2 ]] || usage
    local prefix=$1 name=$2
    validate_prefix "$prefix"
    need_root
    need_lab "$prefix"
    need_bin
    local run
    run=$(run_dir "$prefix")
    [[ -f $run/$name.toml ]] || die "node '$name' was never started in lab '$prefix' (no $run/$name.toml)"
    stop_named "$run" "$name"
    echo "===== lab.sh restart-node $(date -u +%FT%TZ) =====" >>"$run/$name.log"
    start_node "$prefix" "$run" "$name"
    log "node $name restarted in lab '$prefix' (pid $(recorded "$run" "$name" | awk '{print $1}'))"
}

cmd_kill_relay() {
    [[ $# -eq 2 ]] || usage
    local prefix=$1 name=$2
    validate_prefix "$prefix"
    need_root
    local run rec pid start i
    run=$(run_dir "$prefix")
    [[ -d $run ]] || die "lab '$prefix' is not up"
    if [[ ! -f $run/relays ]] || ! grep -qxF -- "$name" "$run/relays"; then
        die "'$name' is not a relay started in lab '$prefix' (started: $(xargs <"$run/relays" 2>/dev/null || true))"
    fi
    rec=$(recorded "$run" "$name")
    [[ -n $rec ]] || die "relay '$name' is not running in lab '$prefix' (killed already?)"
    read -r pid start <<<"$rec"
    proc_alive "$pid" "$start" || die "relay '$name' (pid $pid) is not running"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do # bounded: 5 s
        proc_alive "$pid" "$start" || break
        sleep 0.1
    done
    proc_alive "$pid" "$start" && die "relay '$name' (pid $pid) survived SIGKILL for 5 s"
    echo "===== lab.sh kill-relay (SIGKILL) $(date -u +%FT%TZ) =====" >>"$run/$name.log"
    unrecord "$run" "$name"
    log "relay '$name' (pid $pid) killed in lab '$prefix'"
}

cmd_move() {
    [[ $# -ge 2 && $# -le 3 ]] || usage
    local prefix=$1 host=$2 to=${3:-}
    validate_prefix "$prefix"
    validate_host "$host"
    need_root
    local run cur ms
    run=$(run_dir "$prefix")
    [[ -d $run ]] || die "lab '$prefix' is not up"
    [[ -f $run/$host.segment ]] ||
        die "'$host' cannot move in lab '$prefix' ($(lab_topology "$prefix")): only bob in 'roam' has two uplinks"
    cur=$(cat "$run/$host.segment")
    [[ -n $to ]] || to=$((3 - cur))
    [[ $to == 1 || $to == 2 ]] || die "SEGMENT must be 1 or 2"
    [[ $to != "$cur" ]] || die "'$host' is already on segment $to"
    ms=$(move_to "$prefix" "$run" "$host" "$to")
    echo "$(date -u +%FT%T.%NZ) $host segment $cur -> $to ($ms ms)" >>"$run/moves.log"
    log "$host moved from segment $cur to segment $to in $ms ms"
    seg_addrs "$to" "$host" | awk '{print $2}'
}

cmd_topology() {
    [[ $# -eq 1 ]] || usage
    validate_prefix "$1"
    lab_topology "$1"
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
    case $name in dc | dc2 | alice | bob | dnsmasq | relay1 | relay2) die "NAME '$name' is reserved" ;; esac
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
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^[a-z][a-z0-9]{0,7}-(sw|dc|alice|bob|dns|relay1|relay2|nata|natb|core|hostile|gwa|gwb|hosta|hostb)$' |
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
    restart-node) cmd_restart_node "$@" ;;
    kill-relay) cmd_kill_relay "$@" ;;
    move) cmd_move "$@" ;;
    topology) cmd_topology "$@" ;;
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
