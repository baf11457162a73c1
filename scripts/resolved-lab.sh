#!/usr/bin/env bash
# A real systemd-resolved for the lab, without installing it on the host.
#
# Installing Debian's systemd-resolved package rewrites the host's /etc/resolv.conf (its
# postinst), so this script never installs it: it downloads the package (and libsystemd-shared
# of the same version, which resolved and resolvectl link against) with `apt-get download`,
# unpacks them with `dpkg -x` into a cache directory, and runs the daemon inside a lab
# namespace in a private mount namespace with its own /run (tmpfs), /etc/systemd,
# /etc/resolv.conf, /etc/passwd and /etc/group (bind mounts over files in the run directory)
# and its own D-Bus system bus. Nothing outside that mount namespace sees any of it.
#
# Usage:
#   resolved-lab.sh fetch CACHE
#       download and unpack into CACHE (once; a second call reuses it) and write
#       CACHE/bin/resolvectl, a wrapper that runs the unpacked resolvectl. Exit status 3 when
#       the packages cannot be fetched (no package mirror): callers skip on that.
#   resolved-lab.sh host CACHE DIR UPSTREAM [SETTING...]
#       run in a lab namespace (e.g. `lab.sh spawn PREFIX alice resolved ...`): enters a new
#       private mount namespace, sets it up from files written to DIR, starts dbus-daemon and
#       systemd-resolved (the package's defaults, global DNS server UPSTREAM, each SETTING such
#       as DNSOverTLS=yes added to [Resolve], the stub listener on 127.0.0.53), writes
#       DIR/ready once resolved owns its bus name, and stays until SIGTERM, when it stops both
#       daemons by PID. Other programs join with `nsenter -t HOST_PID -m` (the namespace's
#       network namespace already matches): the node, resolvectl, dig.
#
# What needed care to run resolved without systemd as PID 1 (systemd 252, Debian 12):
#   - it drops privileges to the user systemd-resolve, which the package's sysusers.d entry
#     creates at install time: the private /etc/passwd and /etc/group carry that user;
#   - it talks to nothing but the system bus (no sd_notify needed without NOTIFY_SOCKET); the
#     bus is a dbus-daemon with our config (system type, the package's own resolve1 policy);
#   - logs go to stderr with SYSTEMD_LOG_TARGET=console.
set -euo pipefail

ME=resolved-lab.sh
PKGS=(systemd-resolved libsystemd-shared)
RESOLVE_UID=64953

die() {
    echo "$ME: error: $*" >&2
    exit 1
}

usage() {
    sed -n '/^# Usage:/,/^# What needed/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

libdir() { echo "$1/root/usr/lib/x86_64-linux-gnu/systemd"; }

download() { # DIR
    (cd "$1" && rm -f ./*.deb &&
        timeout -k 5 120 apt-get -q -o APT::Sandbox::User=root download "${PKGS[@]}" >&2)
}

cmd_fetch() {
    [[ $# -eq 1 ]] || usage
    mkdir -p "$1"
    local cache
    cache=$(realpath "$1")
    if [[ -x $cache/bin/resolvectl && -x $cache/root/lib/systemd/systemd-resolved ]]; then
        return 0
    fi
    if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
        echo "$ME: no apt-get/dpkg on this machine" >&2
        exit 3
    fi
    mkdir -p "$cache/debs"
    rm -rf "${cache:?}/root" "${cache:?}/bin"
    # both packages at the candidate version, so resolved and its library match (the cache is
    # root's, so apt's sandbox user could not write there); a fresh machine's empty package
    # lists are updated once
    if ! download "$cache/debs"; then
        timeout -k 5 300 apt-get -q -o DPkg::Lock::Timeout=120 update >&2 || true
        download "$cache/debs" ||
            { echo "$ME: apt-get download ${PKGS[*]} failed (no package mirror?)" >&2; exit 3; }
    fi
    local deb
    for deb in "$cache"/debs/*.deb; do
        dpkg -x "$deb" "$cache/root"
    done
    [[ -x $cache/root/lib/systemd/systemd-resolved && -x $cache/root/usr/bin/resolvectl ]] ||
        die "the unpacked packages in $cache/root have no systemd-resolved or resolvectl"
    mkdir -p "$cache/bin"
    cat >"$cache/bin/resolvectl" <<EOT
#!/bin/sh
# resolvectl unpacked by scripts/resolved-lab.sh, with its own libsystemd-shared
LD_LIBRARY_PATH="$(libdir "$cache")" exec "$cache/root/usr/bin/resolvectl" "\$@"
EOT
    chmod 0755 "$cache/bin/resolvectl"
}

# Files for the private mount namespace.
write_files() { # CACHE DIR UPSTREAM [SETTING...]
    local cache=$1 dir=$2 upstream=$3
    shift 3
    mkdir -p "$dir/etc/systemd"
    cp /etc/passwd "$dir/etc/passwd"
    cp /etc/group "$dir/etc/group"
    echo "systemd-resolve:x:$RESOLVE_UID:$RESOLVE_UID:systemd Resolver:/:/usr/sbin/nologin" >>"$dir/etc/passwd"
    echo "systemd-resolve:x:$RESOLVE_UID:" >>"$dir/etc/group"
    printf 'nameserver 127.0.0.53\noptions edns0 trust-ad\n' >"$dir/etc/resolv.conf"
    # the package's defaults (LLMNR on, the cache, the stub listener), the lab's DNS server as
    # the global upstream, and the settings of a host that hardened its resolver
    printf '[Resolve]\nDNS=%s\n' "$upstream" >"$dir/etc/systemd/resolved.conf"
    [[ $# -eq 0 ]] || printf '%s\n' "$@" >>"$dir/etc/systemd/resolved.conf"
    cat >"$dir/dbus.conf" <<EOT
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>$cache/root/usr/share/dbus-1/system.d/org.freedesktop.resolve1.conf</include>
</busconfig>
EOT
}

cmd_host() {
    [[ $# -ge 3 ]] || usage
    local cache dir upstream=$3 setting
    cache=$(realpath "$1")
    mkdir -p "$2"
    dir=$(realpath "$2")
    [[ $EUID -eq 0 ]] || die "needs root (mount namespaces)"
    [[ -x $cache/bin/resolvectl ]] || die "nothing unpacked in $cache: run '$ME fetch $cache' first"
    [[ $upstream =~ ^[0-9a-f.:]+$ ]] || die "UPSTREAM '$upstream' is not an IP address"
    for setting in "${@:4}"; do
        [[ $setting =~ ^[A-Za-z]+=[A-Za-z0-9.:~_-]*$ ]] || die "SETTING '$setting' is not KEY=VALUE"
    done
    rm -f "$dir/ready"
    write_files "$cache" "$dir" "$upstream" "${@:4}"
    # unshare execs: this process becomes the holder of the new mount namespace
    exec unshare -m --propagation private "$0" inner "$cache" "$dir"
}

DBUS_PID=
RESOLVED_PID=

stop_daemons() {
    local p
    for p in $RESOLVED_PID $DBUS_PID; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $RESOLVED_PID $DBUS_PID; do
        timeout 5 tail --pid="$p" -f /dev/null 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
    done
}

cmd_inner() {
    local cache=$1 dir=$2 i
    mount -t tmpfs -o mode=0755,size=16m ntmtun-resolved /run
    mkdir -p /run/dbus /run/systemd
    local f
    for f in passwd group resolv.conf; do
        mount --bind "$dir/etc/$f" "/etc/$f"
    done
    mount --bind "$dir/etc/systemd" /etc/systemd
    trap 'stop_daemons; exit 0' TERM INT
    dbus-daemon --config-file="$dir/dbus.conf" --nofork --nopidfile \
        >>"$dir/dbus.log" 2>&1 &
    DBUS_PID=$!
    for ((i = 0; i < 50; i++)); do
        [[ -S /run/dbus/system_bus_socket ]] && break
        sleep 0.1
    done
    [[ -S /run/dbus/system_bus_socket ]] || { stop_daemons; die "dbus-daemon did not start (see $dir/dbus.log)"; }
    SYSTEMD_LOG_LEVEL=debug SYSTEMD_LOG_TARGET=console LD_LIBRARY_PATH="$(libdir "$cache")" \
        "$cache/root/lib/systemd/systemd-resolved" >>"$dir/resolved.log" 2>&1 &
    RESOLVED_PID=$!
    for ((i = 0; i < 100; i++)); do
        kill -0 "$RESOLVED_PID" 2>/dev/null || break
        if timeout 5 "$cache/bin/resolvectl" status >/dev/null 2>&1; then
            echo "$DBUS_PID $RESOLVED_PID" >"$dir/ready"
            break
        fi
        sleep 0.1
    done
    [[ -f $dir/ready ]] || { stop_daemons; die "systemd-resolved did not start (see $dir/resolved.log)"; }
    # wait returns early on a signal, so the trap runs at once
    wait "$RESOLVED_PID" || true
    stop_daemons
    die "systemd-resolved exited (see $dir/resolved.log)"
}

[[ $# -ge 1 ]] || usage
cmd=$1
shift
case $cmd in
fetch) cmd_fetch "$@" ;;
host) cmd_host "$@" ;;
inner) cmd_inner "$@" ;;
*) usage ;;
esac
