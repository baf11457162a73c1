# shellcheck shell=bash
# Shared by perf/throughput.sh and perf/profile.sh: tool installation, the ntmtun build, the
# `lan` lab (up, started, tunnel resolved) and the iperf3 server. Sourced, not run; the caller
# sets ME, ROOT, LAB, PREFIX and WORK before calling these, and installs a trap that calls
# perf_cleanup.
#
# Safety (shared/LAB.md): only the namespaces PREFIX-* that lab.sh creates, every command under
# `timeout`, every loop bounded, background processes started through `lab.sh spawn` (so their
# PIDs are recorded) and stopped by PID.

PORT=5201
# Tools installed with `cargo install` go here, kept between runs (cargo clean removes them).
TOOLS_ROOT="$ROOT/target/perf-tools"
LAB_UP=0
SERVER_NAME=
# --nice N: the measured processes (tunnel ends, iperf3, ping) run at this nice value, ahead of
# whatever else shares the machine (0: left alone)
NICE=0
NICE_CMD=()

die() {
    echo "$ME: error: $*" >&2
    exit 1
}
log() { echo "$ME: $*" >&2; }

in_ns() { # HOST SECONDS CMD...: a bounded command in PREFIX-HOST
    local host=$1 t=$2
    shift 2
    timeout "$t" ip netns exec "$PREFIX-$host" "$@"
}

random_prefix() { # TWO_LETTERS -> a fresh lab prefix
    local p
    p="$1$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
    echo "${p:0:8}"
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -f $HOME/.cargo/env ]]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    command -v cargo >/dev/null 2>&1
}

# Debian packages for the commands given as CMD:PACKAGE pairs; installs the missing ones with
# apt-get (one `apt-get update` per run). Returns non-zero if any command is still missing.
APT_UPDATED=0
ensure_apt() {
    local spec cmd pkg
    local -a missing=()
    for spec in "$@"; do
        cmd=${spec%%:*} pkg=${spec#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [[ ${#missing[@]} -gt 0 ]] || return 0
    command -v apt-get >/dev/null 2>&1 || {
        log "missing: ${missing[*]} (no apt-get here: install them by hand)"
        return 1
    }
    log "installing Debian packages: ${missing[*]}"
    if [[ $APT_UPDATED -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive timeout 300 apt-get update -q >&2 || log "warning: apt-get update failed"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >&2 || log "warning: apt-get install ${missing[*]} failed"
    for spec in "$@"; do
        command -v "${spec%%:*}" >/dev/null 2>&1 || return 1
    done
}

# A binary from crates.io, built once with `cargo install --locked` into TOOLS_ROOT.
# CRATE BINARY -> prints the binary's path; non-zero if it cannot be had.
ensure_cargo_tool() {
    local crate=$1 bin=$2
    if [[ -x $TOOLS_ROOT/bin/$bin ]]; then
        echo "$TOOLS_ROOT/bin/$bin"
        return 0
    fi
    ensure_cargo || {
        log "cargo not found: cannot install $crate"
        return 1
    }
    log "cargo install --locked $crate (into $TOOLS_ROOT; once)"
    timeout 1800 cargo install --locked --root "$TOOLS_ROOT" "$crate" >&2 ||
        log "warning: cargo install $crate failed"
    [[ -x $TOOLS_ROOT/bin/$bin ]] || return 1
    echo "$TOOLS_ROOT/bin/$bin"
}

# cargo build --release (or of a committed revision with --rev): sets NTMTUN_BIN, COMMIT and,
# for --rev, LAB (that revision's lab.sh). BUILD=0 skips the build. PROFILE (default release)
# names the cargo profile of the working tree's build: `profiling` is the release build with
# line tables (Cargo.toml), which perf's DWARF call graphs need; release ships without them.
build_ntmtun() { # BUILD REV [PROFILE]
    local build=$1 rev=$2 profile=${3:-release}
    if [[ -n $rev ]]; then
        COMMIT=$(git rev-parse --short "$rev^{commit}" 2>/dev/null) || die "no such revision '$rev'"
        mkdir "$WORK/src"
        timeout 60 git archive "$COMMIT" | tar -x -C "$WORK/src" || die "git archive $COMMIT failed"
        LAB="$WORK/src/scripts/lab.sh"
        [[ -x $LAB ]] || die "revision $COMMIT has no scripts/lab.sh"
        ensure_cargo || die "cargo not found (or pass --no-build)"
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
        if [[ $build -eq 1 ]]; then
            ensure_cargo || die "cargo not found (or pass --no-build)"
            log "cargo build --profile $profile"
            timeout 1800 cargo build --profile "$profile" >&2 ||
                die "cargo build --profile $profile failed (work in progress? try --rev HEAD)"
        fi
    fi
    NTMTUN_BIN=$(realpath "${NTMTUN_BIN:-target/$profile/ntmtun}")
    [[ -x $NTMTUN_BIN ]] || die "no ntmtun binary at $NTMTUN_BIN"
    export NTMTUN_BIN
}

# The lan lab with the DC and both nodes running and registered.
lab_start() {
    log "building lab '$PREFIX' (scripts/lab.sh up lan $PREFIX; start)"
    LAB_UP=1
    timeout 120 "$LAB" up lan "$PREFIX" || die "lab.sh up failed"
    timeout 120 "$LAB" start "$PREFIX" || die "lab.sh start failed"
    RUN_DIR=/tmp/ntmtun-lab/$PREFIX
}

# alice.ntm.internal resolved from bob (sets VIP) and the tunnel carrying pings; non-zero (with
# a message) if not, so that a caller can report a mode as failed instead of stopping.
tunnel_ready() {
    VIP=$(in_ns bob 15 dig +short +time=2 +tries=3 alice.ntm.internal A 2>/dev/null | head -n1 || true)
    if [[ ! $VIP =~ ^198\.1[89]\.[0-9]+\.[0-9]+$ ]]; then
        log "alice.ntm.internal did not resolve to a virtual address from bob (got '$VIP')"
        return 1
    fi
    wait_ping "$VIP"
}

wait_ping() { # TARGET: bounded wait (20 tries) until bob's pings reach it
    local i
    for ((i = 0; i < 20; i++)); do
        in_ns bob 5 ping -q -c 1 -W 1 "$1" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    log "no ping from bob to $1 after 20 tries"
    return 1
}

node_pid() { # NAME -> PID that lab.sh recorded for it (last record), or nothing
    awk -v n="$1" '$1 == n {p = $2} END {if (p != "") print p}' "$RUN_DIR/pids" 2>/dev/null
}

RUN_NO=0
start_server() { # -> sets SERVER_NAME; iperf3 one-off server on alice, stopped by PID later
    RUN_NO=$((RUN_NO + 1))
    SERVER_NAME="iperf3-$RUN_NO"
    "$LAB" spawn "$PREFIX" alice "$SERVER_NAME" \
        "${NICE_CMD[@]}" iperf3 -s -1 -p "$PORT" --idle-timeout $((SECS + 60)) >/dev/null
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

perf_cleanup() { # for the caller's EXIT trap
    if [[ $LAB_UP -eq 1 ]]; then
        stop_server
        log "tearing down lab '$PREFIX'"
        timeout 60 "$LAB" down "$PREFIX" || log "warning: 'lab.sh down $PREFIX' failed; run it by hand"
    fi
    if [[ -n ${WORK:-} ]]; then rm -rf -- "$WORK"; fi
}

set_nice() { # N: NICE and NICE_CMD for the measured commands
    NICE=$1
    NICE_CMD=()
    [[ $NICE -eq 0 ]] || NICE_CMD=(nice -n "$NICE")
}

# Every thread of the PIDs to NICE (renice changes one thread at a time on Linux).
renice_pids() {
    [[ $NICE -ne 0 ]] || return 0
    local pid tid
    for pid in "$@"; do
        for tid in /proc/"$pid"/task/*; do
            renice -n "$NICE" -p "${tid##*/}" >/dev/null 2>&1 || true
        done
    done
}

# CPU seconds (user + system, all threads, as /proc/PID/stat counts them) of the PIDs, summed.
cpu_seconds() {
    local pid stat rest total=0
    local -a f
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        rest=${stat##*) }
        read -r -a f <<<"$rest"
        # after "comm)" the fields start at 3 (state): utime is field 14, stime 15
        total=$((total + f[11] + f[12]))
    done
    awk -v t="$total" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.3f\n", t / hz}'
}
