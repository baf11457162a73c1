#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60) and prints a table of
# executions and crashes per target. Exits non-zero if any target crashed (or failed to run).
#
#   scripts/fuzz.sh            60 s per target
#   scripts/fuzz.sh 600        a long run (the figures in docs/security.md, "Fuzzing")
#   scripts/fuzz.sh 30 dns     only the named targets
#
# Installs cargo-fuzz when missing (cargo install cargo-fuzz --locked). libFuzzer needs nightly
# compiler flags (-Zsanitizer=address); the machine's stable toolchain accepts them with
# RUSTC_BOOTSTRAP=1, so that is what runs (NTMTUN_FUZZ_TOOLCHAIN=nightly picks another).
# Targets run with AddressSanitizer and debug assertions (integer overflow panics).
# Corpora grow in fuzz/corpus/<target> (gitignored), seeded from fuzz/seeds/<target>
# (committed; regenerate with: cd fuzz && cargo run --example seeds -- seeds).
# Crashing inputs land in fuzz/artifacts/<target>/; logs in fuzz/target/logs/<target>.log.
set -euo pipefail

ME=${0##*/}
cd "$(dirname "$0")/.."
ROOT=$PWD

die() {
    echo "$ME: error: $*" >&2
    exit 2
}

SECS=${1:-60}
[[ $SECS =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a positive whole number, got '$SECS' (usage: $ME [SECONDS] [TARGET...])"
shift || true

if ! command -v cargo >/dev/null 2>&1 && [[ -f $HOME/.cargo/env ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup) first"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "$ME: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked >/dev/null 2>&1 ||
        cargo install cargo-fuzz --locked || die "cargo install cargo-fuzz --locked failed"
fi

TOOLCHAIN=()
if [[ -n ${NTMTUN_FUZZ_TOOLCHAIN:-} ]]; then
    TOOLCHAIN=("+$NTMTUN_FUZZ_TOOLCHAIN")
fi
export RUSTC_BOOTSTRAP=1

cd "$ROOT/fuzz"
mapfile -t ALL < <(cargo "${TOOLCHAIN[@]}" fuzz list)
[[ ${#ALL[@]} -gt 0 ]] || die "cargo fuzz list found no targets in fuzz/"
if [[ $# -gt 0 ]]; then
    for t in "$@"; do
        printf '%s\n' "${ALL[@]}" | grep -qx -- "$t" || die "no fuzz target '$t' (targets: ${ALL[*]})"
    done
    TARGETS=("$@")
else
    TARGETS=("${ALL[@]}")
fi

FLAGS=(--release --debug-assertions)
echo "$ME: building the fuzz targets (ASan, debug assertions)"
LOGS=$ROOT/fuzz/target/logs
mkdir -p "$LOGS"
start=$SECONDS
if ! cargo "${TOOLCHAIN[@]}" fuzz build "${FLAGS[@]}" >"$LOGS/build.log" 2>&1; then
    tail -n 60 "$LOGS/build.log" >&2
    die "cargo fuzz build failed (log: $LOGS/build.log)"
fi
grep -E '^warning' -A8 "$LOGS/build.log" || true
echo "$ME: built in $((SECONDS - start)) s; running each target for $SECS s"

rows=()
failed=0
total_execs=0
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    log=$LOGS/$t.log
    status=0
    extra=()
    # The cores take sequences of datagrams: let inputs be long from the start.
    [[ $t == *_core ]] && extra=(-len_control=0 -max_len=4096)
    # -timeout: one input running 30 s is a hang, reported as a crash (timeout-...).
    cargo "${TOOLCHAIN[@]}" fuzz run "${FLAGS[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECS" -print_final_stats=1 -timeout=30 -rss_limit_mb=4096 \
        "${extra[@]}" >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    if [[ -z $execs ]]; then
        execs=$(sed -n 's/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' "$log" | tail -1)
    fi
    if [[ -z $execs ]]; then
        # A crash ends the run before the final stats: the last status line has the count.
        execs=$(sed -n 's/^#\([0-9]*\)[[:space:]].*/\1/p' "$log" | tail -1)
    fi
    execs=${execs:-0}
    persec=$((execs / SECS))
    corpus=$(find "corpus/$t" -type f | wc -l)
    crashes=$(grep -c 'Test unit written to' "$log" || true)
    note=""
    if [[ $status -ne 0 || $crashes -gt 0 ]]; then
        failed=1
        [[ $crashes -gt 0 ]] || crashes="error"
        note=" <- see $log"
        grep -h 'Test unit written to' "$log" | sed "s|^|    $t: |" >&2 || true
    fi
    total_execs=$((total_execs + execs))
    rows+=("$(printf '%-14s %14s %10s %8s %8s%s' "$t" "$execs" "$persec" "$corpus" "$crashes" "$note")")
    echo "$ME: $t: $execs executions, crashes: $crashes"
done

echo
printf '%-14s %14s %10s %8s %8s\n' target executions "exec/s" corpus crashes
printf '%s\n' "${rows[@]}"
printf '%-14s %14s\n' total "$total_execs"
echo "($SECS s per target, $(date -u +%Y-%m-%d), cargo-fuzz $(cargo fuzz --version 2>/dev/null | awk '{print $2}'), $(rustc "${TOOLCHAIN[@]}" --version))"

if [[ $failed -ne 0 ]]; then
    echo "$ME: FAILED: a fuzz target crashed or did not run; reproduce with:" >&2
    echo "  cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${FLAGS[*]} TARGET artifacts/TARGET/crash-..." >&2
    exit 1
fi
echo "$ME: no crashes"
