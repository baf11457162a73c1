# Sourced by the scripts that need root (demo.sh, test.sh, connectivity.sh), so that each runs
# as typed, by root or by a user with sudo:
#   . "$(dirname "$0")/as-root.sh"; as_root "WHY IT NEEDS ROOT" "$@"
# re-runs the calling script under sudo when it is not root (keeping the environment and PATH,
# so that cargo and the variables that steer the script still work), and stops with what to do
# where there is no sudo (minimal images and containers, where one is root anyway).
as_root() {
    local why=$1
    shift
    [[ $EUID -eq 0 ]] && return 0
    local me
    me=$(readlink -f "$0")
    if command -v sudo >/dev/null 2>&1; then
        echo "${me##*/}: $why, which needs root: re-running with sudo" >&2
        exec sudo -E env "PATH=$PATH" bash "$me" "$@"
    fi
    echo "${me##*/}: $why, which needs root, and sudo is not available: run it as root." >&2
    exit 1
}
