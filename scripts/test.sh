#!/usr/bin/env bash
# The project's test command: every check CI runs, in the order CI runs them.
#
#   scripts/test.sh
#
# Needs Debian with rustup; the first stage (scripts/setup.sh) installs the rest, or nothing
# when it is all there. The wasm32 target comes from rustup, or Debian's packages stand in
# (see scripts/wasm-build.sh).
set -euo pipefail

cd "$(dirname "$0")/.."

# Each stage prints a banner; on exit, the time each stage took.
timings=()
current=""
started=$SECONDS

end_stage() {
    if [ -n "$current" ]; then
        timings+=("$(printf '%6ss  %s%s' "$((SECONDS - started))" "$current" "${1:-}")")
    fi
    current=""
}

stage() {
    end_stage
    current="$1"
    started=$SECONDS
    echo
    echo "==> $1"
}

summary() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then end_stage "  (FAILED)"; else end_stage; fi
    echo
    echo "==> stage timings"
    printf '%s\n' "${timings[@]}"
    if [ "$rc" -eq 0 ]; then
        echo "==> all checks passed"
    else
        echo "==> FAILED (exit $rc)"
    fi
    return "$rc"
}
trap summary EXIT
# Killed (a timeout, ctrl-c): exit with the signal's status, so the summary says FAILED.
trap 'exit 130' INT
trap 'exit 143' TERM

stage setup
# A clean run needs a few GB of build output; say what there was if it runs out.
echo "disk free where the build goes: $(df -h . | awk 'NR == 2 { print $4 }')"
scripts/setup.sh

stage fmt
cargo fmt --all -- --check

stage clippy
cargo clippy --workspace --all-targets --locked -- -D warnings
# The core without its add-ons (relay, sources) must build, and lint, on its own.
cargo clippy -p gotalk --no-default-features --all-targets --locked -- -D warnings
# The command without cluster support (no Redis or NATS client) must build, and lint, too.
cargo clippy -p gotalk-cli --no-default-features --lib --locked -- -D warnings

stage doc
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
# The README's example is a copy of a doc test; it must not drift from it.
scripts/readme-example.sh

# The real-peer tests in `cargo test` run gotalk.js in Node with e2e/'s `ws` package, and
# build the original Go gotalk with `go` (Debian's golang-go; .ci/run installs it).
stage "node modules (e2e/)"
(cd e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)

stage test
cargo test --workspace --locked

# cargo deny (deny.toml) and npm audit; an audit whose service cannot be reached here is
# printed as NOT CHECKED, not passed (scripts/supply-chain.sh says how to make that fail).
stage "supply chain (cargo deny, npm audit)"
scripts/supply-chain.sh

# A brief run of every fuzz target (scripts/fuzz.sh), when nightly and cargo-fuzz are here;
# the committed corpus and crash inputs are replayed on stable by the test stage regardless.
if cargo +nightly --version >/dev/null 2>&1 && cargo +nightly fuzz --version >/dev/null 2>&1; then
    stage "fuzz (${GOTALK_FUZZ_SECONDS:-20} s per target)"
    scripts/fuzz.sh "${GOTALK_FUZZ_SECONDS:-20}"
else
    echo
    echo "==> fuzz: SKIPPED: needs a nightly toolchain and cargo-fuzz (see scripts/fuzz.sh);"
    echo "    the corpus and crash regressions were still replayed by the test stage"
fi

stage "wasm32 build (gotalk-protocol)"
scripts/wasm-build.sh gotalk-protocol

# Rebuilds the browser client (scripts/build-client.sh --check, into target/client-bundle/):
# fails when it no longer builds, when it is over its size budget, or when the bundle
# committed in crates/gateway/client/ is stale (judged by a hash of its inputs, since the rustup and
# Debian wasm routes produce different bytes).
stage "browser client bundle (crates/wasm)"
scripts/build-client.sh --check
# And the check must catch a stale bundle: a copy whose recorded inputs differ is refused.
stale="$(mktemp -d)"
cp -r crates/gateway/client/. "$stale"
echo 0000 >"$stale/.inputs"
if GOTALK_COMMITTED_BUNDLE="$stale" scripts/build-client.sh --check 2>"$stale/err" >/dev/null \
    || ! grep -q "is stale" "$stale/err"; then
    echo "build-client.sh --check did not refuse a stale bundle:" >&2
    cat "$stale/err" >&2
    exit 1
fi
rm -rf "$stale"

# Every publishable crate packaged as crates.io would, and an app built against the packages
# (its page is run by e2e/tests/packaged.spec.ts below).
stage "cargo package, an app on the packages"
scripts/package-check.sh

# The real server binary (which embeds the bundle and the demo page) in the system's
# Chromium ($CHROMIUM, by default /usr/bin/chromium); outputs go to e2e/out/.
stage "e2e (Playwright)"
# The servers the specs start: the e2e binary, the benchmark, and the example app (auth.spec.ts).
cargo build -p gotalk-tests -p gotalk-bench -p gotalk-example-axum --locked
(
    cd e2e
    # The TypeScript declarations served with the bundle, against the API as pages use it.
    npx tsc -p types
    npx playwright test
)
