#!/usr/bin/env bash
# The supply chain checks: what we depend on, under which licences, from where, and whether
# any of it has a known vulnerability.
#
#   scripts/supply-chain.sh
#
# - #![forbid(unsafe_code)] at the top of each of our crate roots.
# - cargo deny check bans licenses sources (deny.toml): always; these need only crates.io.
# - cargo deny check advisories: needs the RustSec database from GitHub.
# - npm audit --audit-level=high in e2e/ and crates/wasm/: needs npm's audit endpoint.
#
# A check whose service cannot be reached is reported as NOT CHECKED, never as passed, and
# the script still exits 0 so that an offline machine can run the rest of the suite; set
# GOTALK_REQUIRE_AUDITS=1 to make an unchecked audit fail instead. A check that runs and
# finds something always fails.
#
# Needs cargo-deny (cargo install cargo-deny --locked) and npm.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! cargo deny --version >/dev/null 2>&1; then
    echo "supply-chain: needs cargo-deny: cargo install cargo-deny --locked" >&2
    exit 1
fi

unchecked=()
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# Every crate root of ours that ends up in something we ship or run (libraries, binaries,
# examples, build scripts) forbids unsafe code itself, so a new one cannot quietly go
# without it. Integration tests are left to the workspace lint (`unsafe_code = "forbid"`).
roots="$(cargo metadata --no-deps --format-version 1 --locked | node -e '
    const meta = JSON.parse(require("fs").readFileSync(0, "utf8"));
    for (const p of meta.packages) for (const t of p.targets)
        if (!t.kind.includes("test") && !t.kind.includes("bench")) console.log(t.src_path);
')"
missing="$(grep -L '^#!\[forbid(unsafe_code)\]' $roots || true)"
if [ -n "$missing" ]; then
    echo "supply-chain: these crate roots lack #![forbid(unsafe_code)]:" >&2
    echo "$missing" >&2
    exit 1
fi
echo "forbid(unsafe_code): $(wc -w <<<"$roots") crate roots"

cargo deny --locked check bans licenses sources

# cargo deny fetches the database itself; only its own fetch failure counts as unreachable,
# so a finding can never be mistaken for a network problem.
if cargo deny --locked check advisories 2>&1 | tee "$log"; then
    :
elif grep -q "failed to fetch advisory database" "$log"; then
    unchecked+=("cargo deny advisories (the RustSec database on github.com cannot be fetched)")
else
    echo "supply-chain: cargo deny check advisories failed" >&2
    exit 1
fi

# npm audit prints a JSON object with a top-level "error" (and no "vulnerabilities") when
# the endpoint itself failed; with findings it lists them under "vulnerabilities".
for dir in e2e crates/wasm; do
    if (cd "$dir" && npm audit --audit-level=high --json >"$log" 2>/dev/null); then
        echo "npm audit ($dir): no high or critical advisories"
        continue
    fi
    if node -e '
        const report = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
        process.exit(report.error && !report.vulnerabilities ? 0 : 1);
    ' "$log"; then
        reason="$(node -e '
            const report = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
            console.log(report.message || report.error.summary);
        ' "$log" 2>/dev/null || true)"
        unchecked+=("npm audit in $dir/ (the audit endpoint failed: ${reason:-no answer})")
    else
        # Findings: print them readably, then fail.
        (cd "$dir" && npm audit --audit-level=high) || true
        echo "supply-chain: npm audit found high or critical advisories in $dir/" >&2
        exit 1
    fi
done

if [ ${#unchecked[@]} -gt 0 ]; then
    echo
    for what in "${unchecked[@]}"; do
        echo "supply-chain: NOT CHECKED: $what"
    done
    if [ "${GOTALK_REQUIRE_AUDITS:-0}" = 1 ]; then
        echo "supply-chain: GOTALK_REQUIRE_AUDITS=1, so an unchecked audit fails" >&2
        exit 1
    fi
fi
