#!/usr/bin/env bash
# ntmtun demo: builds ntmtun, makes a small simulated Internet (a DC, a relay and an ordinary DNS
# server on the Internet segment; alice and bob each in their own LAN behind their own NAT
# router), starts the DC, the relay and both nodes, then shows name resolution, ping, a file
# transfer and an HTTP fetch by name through the encrypted tunnel (the NATs punched), the path
# each node chose, and each node's status. Always cleans up.
#
#   scripts/demo.sh                            # topology nat-nat
#   DEMO_TOPOLOGY=symmetric scripts/demo.sh    # any topology of scripts/lab.sh
# As root, or as a user with sudo: it re-runs itself under sudo (scripts/as-root.sh).
set -euo pipefail

ME=${0##*/}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
LAB=$HERE/lab.sh

# shellcheck source=scripts/as-root.sh
. "$HERE/as-root.sh"
as_root "the demo creates network namespaces and TUN devices" "$@"

step() {
    printf '\n\033[1m==> %s\033[0m\n' "$*"
}

PREFIX=""
RUN=""

fail() {
    echo >&2
    echo "$ME: FAILED: $*" >&2
    if [[ -n $RUN && -d $RUN ]]; then
        local f
        for f in "$RUN"/dc.log "$RUN"/alice.log "$RUN"/bob.log; do
            [[ -f $f ]] || continue
            echo "----- last lines of ${f##*/} -----" >&2
            tail -n 25 "$f" >&2 || true
        done
    fi
    exit 1
}

cleanup() {
    local rc=$?
    if [[ -n $PREFIX ]]; then
        echo >&2
        echo "$ME: cleaning up lab '$PREFIX'" >&2
        "$LAB" down "$PREFIX" || echo "$ME: warning: cleanup of lab '$PREFIX' reported an error" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

in_ns() { # HOST CMD... (bounded by the caller with timeout)
    local host=$1
    shift
    ip netns exec "$PREFIX-$host" "$@"
}

wait_listen() { # HOST PORT: bounded (10 s) wait for a TCP listener
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -n "$(in_ns "$1" ss -Hltn "sport = :$2" 2>/dev/null)" ]] && return 0
        sleep 0.2
    done
    fail "nothing listens on TCP port $2 in $1 after 10 s"
}

status_field() { # HOST PYTHON-EXPR-ON-d
    in_ns "$1" timeout 10 "$BIN" status --socket "$RUN/$1.sock" --json |
        python3 -c "import json,sys; d=json.load(sys.stdin); print($2)"
}

is_vip() { # inside 198.18.0.0/15
    [[ $1 =~ ^198\.1[89]\.[0-9]{1,3}\.[0-9]{1,3}$ ]]
}

# ---------------------------------------------------------------------------------------------
step "Setup (scripts/setup.sh) and build (cargo build --release)"
"$HERE/setup.sh"
if ! command -v cargo >/dev/null 2>&1 && [[ -f $HOME/.cargo/env ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || fail "cargo not found"
(cd "$ROOT" && cargo build --release)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/ntmtun
[[ -x $BIN ]] || fail "the build did not produce $BIN"
export NTMTUN_BIN=$BIN

PREFIX="d$(($$ % 10000000))"
RUN=/tmp/ntmtun-lab/$PREFIX # lab.sh's run dir for this prefix

TOPOLOGY=${DEMO_TOPOLOGY:-nat-nat}
case $TOPOLOGY in
nat-nat) about="DC .10, relay .20, DNS .53 on 198.51.100.0/24; alice in 192.0.2.0/26 behind NAT .101, bob in 192.0.2.64/26 behind NAT .102" ;;
lan) about="DC 198.51.100.10, alice .11, bob .12, DNS server .53 on one segment" ;;
*) about="see the sketch of '$TOPOLOGY' at the top of scripts/lab.sh" ;;
esac
step "Lab '$PREFIX', topology $TOPOLOGY: $about"
"$LAB" up "$TOPOLOGY" "$PREFIX" || fail "lab.sh up"

step "Starting the DC and the nodes alice and bob (waiting until both are registered)"
"$LAB" start "$PREFIX" || fail "lab.sh start"
alice_vip=$(status_field alice 'd["virtual_ip"]') || fail "status of alice"
bob_vip=$(status_field bob 'd["virtual_ip"]') || fail "status of bob"
echo "alice has virtual IP $alice_vip, bob has $bob_vip"

step "bob: dig +short alice.ntm.internal   (answered by bob's node after signaling with the DC)"
out=$(in_ns bob timeout 30 dig +short +time=3 +tries=3 alice.ntm.internal) || fail "dig alice.ntm.internal"
echo "$out"
[[ $out == "$alice_vip" ]] || fail "expected alice's virtual IP $alice_vip"
is_vip "$out" || fail "$out is not inside 198.18.0.0/15"

step "bob: dig +short www.example.test   (an ordinary name, through the real resolver)"
out=$(in_ns bob timeout 30 dig +short +time=3 +tries=3 www.example.test) || fail "dig www.example.test"
echo "$out"
[[ $out == 198.51.100.80 ]] || fail "expected 198.51.100.80"

step "bob: ping -c 3 alice.ntm.internal"
in_ns bob timeout 30 ping -c 3 -W 2 alice.ntm.internal || fail "ping alice.ntm.internal from bob"

step "alice: ping -c 3 bob.ntm.internal"
in_ns alice timeout 30 ping -c 3 -W 2 bob.ntm.internal || fail "ping bob.ntm.internal from alice"

step "nc: 4 MiB of random data from alice to bob.ntm.internal:5001"
head -c 4194304 /dev/urandom >"$RUN/demo-send.bin"
"$LAB" spawn "$PREFIX" bob ncrecv nc -l -p 5001 >/dev/null || fail "starting nc -l in bob"
wait_listen bob 5001
in_ns alice timeout 60 nc -N bob.ntm.internal 5001 <"$RUN/demo-send.bin" || fail "nc send from alice"
for ((i = 0; i < 100; i++)); do # bounded: 20 s for the last bytes to land
    [[ $(stat -c %s "$RUN/ncrecv.out") -ge 4194304 ]] && break
    sleep 0.2
done
"$LAB" stop "$PREFIX" ncrecv
sent=$(sha256sum <"$RUN/demo-send.bin" | awk '{print $1}')
recv=$(sha256sum <"$RUN/ncrecv.out" | awk '{print $1}')
echo "sent     $(stat -c %s "$RUN/demo-send.bin") bytes, sha256 $sent"
echo "received $(stat -c %s "$RUN/ncrecv.out") bytes, sha256 $recv"
[[ $sent == "$recv" ]] || fail "the received file differs from the sent one"

step "HTTP: python3 -m http.server 8080 in alice; bob: curl http://alice.ntm.internal:8080/"
mkdir -p "$RUN/www"
echo "Hello from alice, over ntmtun." >"$RUN/www/index.html"
"$LAB" spawn "$PREFIX" alice web python3 -m http.server 8080 --directory "$RUN/www" >/dev/null ||
    fail "starting the HTTP server in alice"
wait_listen alice 8080
out=$(in_ns bob timeout 30 curl -sS --max-time 20 http://alice.ntm.internal:8080/) || fail "curl from bob"
echo "$out"
[[ $out == "Hello from alice, over ntmtun." ]] || fail "unexpected HTTP body"
"$LAB" stop "$PREFIX" web

step "bob: ntmtun ping alice   (which path the pair is on, and the round trip)"
in_ns bob timeout 20 "$BIN" ping alice --count 2 --socket "$RUN/bob.sock" || fail "ntmtun ping alice"

step "alice: ntmtun status"
in_ns alice timeout 10 "$BIN" status --socket "$RUN/alice.sock" || fail "ntmtun status on alice"

step "bob: ntmtun status"
in_ns bob timeout 10 "$BIN" status --socket "$RUN/bob.sock" || fail "ntmtun status on bob"

echo
echo "$ME: SUCCESS ($TOPOLOGY): names resolved to virtual IPs ($alice_vip, $bob_vip), ordinary DNS, ping both ways, 4 MiB by nc (sha256 equal) and HTTP by name all went through ntmtun."
