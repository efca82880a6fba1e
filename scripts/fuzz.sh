#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for a bounded time and prints how many inputs
# each one executed. Fails when a target finds a crash, a hang or a leak.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     # default 60 s, every target
#
# Needs a nightly toolchain and cargo-fuzz 0.13.2 (`cargo install cargo-fuzz --version 0.13.2
# --locked`). New inputs go to a scratch directory, so the committed corpus (fuzz/corpus/)
# only changes by hand: copy new inputs in, then `cargo +nightly fuzz cmin -O <target>
# fuzz/corpus/<target> -- -use_counters=0` (edge coverage only, which keeps it small).
# A crashing input is left in fuzz/artifacts/<target>/; once fixed, commit it under
# fuzz/regressions/<target>/, where `cargo test -p gotalk-fuzz-harness` replays it.
set -euo pipefail

cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$f" .rs)")
    done
fi

cargo +nightly fuzz build -O

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
results=()
failed=()
for t in "${targets[@]}"; do
    echo "==> fuzz $t for ${seconds}s"
    mkdir -p "$scratch/$t"
    # -timeout: one input taking longer than this (real time) is a hang. The harness runs
    # on a paused clock, so a correct input takes milliseconds.
    set +e
    cargo +nightly fuzz run -O "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$scratch/$t.log" 2>&1
    rc=$?
    set -e
    execs="$(awk '/stat::number_of_executed_units/ { print $NF }' "$scratch/$t.log")"
    if [ "$rc" -ne 0 ]; then
        tail -n 60 "$scratch/$t.log" >&2
        failed+=("$t")
        results+=("$(printf '%-16s FAILED (exit %s), %s executions' "$t" "$rc" "${execs:-?}")")
    else
        results+=("$(printf '%-16s %12s executions in %ss' "$t" "${execs:-?}" "$seconds")")
    fi
done

echo
echo "==> fuzzing: executions per target"
printf '%s\n' "${results[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "==> crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
