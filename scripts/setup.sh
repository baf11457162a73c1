#!/usr/bin/env bash
# Installs what building, testing and the network lab need, and only what is missing.
# Idempotent; prints nothing when everything is already there.
set -euo pipefail

ME=${0##*/}
export PATH="$PATH:/usr/sbin:/sbin"
# iproute2 and nftables: the lab builds its namespaces, veths and NAT routers with `ip` and `nft`
# and the tests read the node's rules and tables back with them; the node itself needs neither
# (it talks netlink, src/net/host/).
APT_PACKAGES=(iproute2 nftables iperf3 iputils-ping dnsutils netcat-openbsd tcpdump dnsmasq-base
    ethtool curl procps
    # tests/lab_idle.rs: flushes a NAT router's conntrack table (the router lost its state)
    conntrack
    # tests/lab_resolved.rs: the private system bus of the lab's systemd-resolved
    dbus-daemon util-linux
    # tests/package.rs: dpkg as a non-root user (fakeroot), and `man` opening the package's pages
    fakeroot man-db)
# cargo-deb builds the Debian package (scripts/package.sh, tests/package.rs); pinned, so that
# every machine makes the same package.
CARGO_DEB_VERSION=3.8.0

die() {
    echo "$ME: error: $*" >&2
    exit 1
}

# --- Debian packages ---------------------------------------------------------------------------
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for p in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    # python3 (lab.sh parses status JSON with it; the demo serves HTTP with it): any python3 will do
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
else
    die "dpkg-query not found: this script supports Debian/Ubuntu; install by hand: ${APT_PACKAGES[*]} python3"
fi

if [[ ${#missing[@]} -gt 0 ]]; then
    SUDO=()
    if [[ $EUID -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            die "missing packages (${missing[*]}) and not root (no sudo): run as root: apt-get install ${missing[*]}"
        fi
    fi
    echo "$ME: installing: ${missing[*]}" >&2
    aptlog=$(mktemp)
    trap 'rm -f "$aptlog"' EXIT
    apt_opts=(-y -q -o DPkg::Lock::Timeout=300 --no-install-recommends)
    if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update \
        >"$aptlog" 2>&1; then
        cat "$aptlog" >&2
        die "apt-get update failed"
    fi
    if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "${missing[@]}" \
        >"$aptlog" 2>&1; then
        cat "$aptlog" >&2
        die "apt-get install ${missing[*]} failed"
    fi
fi

# --- Rust toolchain components ---------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -f $HOME/.cargo/env ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup) first"

components=()
cargo fmt --version >/dev/null 2>&1 || components+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || components+=(clippy)
if [[ ${#components[@]} -gt 0 ]]; then
    command -v rustup >/dev/null 2>&1 ||
        die "missing Rust components (${components[*]}) and no rustup to install them"
    echo "$ME: installing Rust components: ${components[*]}" >&2
    rustup component add "${components[@]}" >/dev/null 2>&1 ||
        die "rustup component add ${components[*]} failed"
fi

# --- cargo tools ---------------------------------------------------------------------------
if [[ $(cargo deb --version 2>/dev/null) != "cargo-deb $CARGO_DEB_VERSION" ]]; then
    echo "$ME: installing cargo-deb $CARGO_DEB_VERSION (cargo install --locked)" >&2
    cargolog=$(mktemp)
    if ! cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked >"$cargolog" 2>&1; then
        cat "$cargolog" >&2
        rm -f "$cargolog"
        die "cargo install cargo-deb --version $CARGO_DEB_VERSION --locked failed"
    fi
    rm -f "$cargolog"
fi

# --- final check -------------------------------------------------------------------------------
for c in ip nft iperf3 ping dig nc tcpdump dnsmasq ethtool curl ps python3 sha256sum timeout \
    dpkg fakeroot man; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' is still missing after setup"
done
