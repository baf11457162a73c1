#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run): setup, rustfmt, clippy, and the whole
# test suite in release mode, including the network-lab tests (tests/lab_*.rs), which need root,
# then a short fuzzing run (scripts/fuzz.sh 10).
#
#   scripts/test.sh                           everything (re-runs itself under sudo if not root)
#   NTMTUN_SKIP_LAB=1 scripts/test.sh         everything except the network-lab tests (reported)
set -euo pipefail

ME=${0##*/}

die() {
    echo "$ME: error: $*" >&2
    exit 1
}

step() {
    printf '\n==> %s\n' "$*"
}

if [[ ${NTMTUN_SKIP_LAB:-} == 1 ]]; then
    echo "############################################################################"
    echo "# $ME: NTMTUN_SKIP_LAB=1: the network-lab tests are SKIPPED (not run)."
    echo "# The lab tests are the end-to-end tests: DNS, tunnels, encryption on the wire."
    echo "############################################################################"
else
    # shellcheck source=scripts/as-root.sh
    . "$(dirname "$0")/as-root.sh"
    as_root "the network-lab tests (tests/lab_*.rs) create network namespaces, veths, TUN \
devices and routes (NTMTUN_SKIP_LAB=1 skips them)" "$@"
fi
cd "$(dirname "$0")/.."

step "setup (scripts/setup.sh)"
scripts/setup.sh

if ! command -v cargo >/dev/null 2>&1 && [[ -f $HOME/.cargo/env ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found"

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test --release"
cargo test --release

step "fuzzing: scripts/fuzz.sh 10 (every cargo-fuzz target for 10 s; see docs/security.md)"
scripts/fuzz.sh 10

if [[ ${NTMTUN_SKIP_LAB:-} == 1 ]]; then
    echo "$ME: passed, but the network-lab tests were SKIPPED (NTMTUN_SKIP_LAB=1)"
else
    echo "$ME: all checks passed (including the network-lab tests)"
fi
