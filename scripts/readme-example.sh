#!/usr/bin/env bash
# Checks that the README's example is the crate-level example of gotalk-gateway, which
# `cargo test` compiles: the README cannot be a doc test itself (a package includes no file
# outside its folder), so the two copies are compared instead.
#
#   scripts/readme-example.sh
set -euo pipefail

cd "$(dirname "$0")/.."

# The first ```rust block of README.md.
readme="$(awk '/^```rust/ { inside = 1; next } inside && /^```/ { exit } inside' README.md)"
# The first ```rust block of the crate docs, without the `//! ` (or `//!`) in front.
crate_doc="$(awk '/^\/\/! ```rust/ { inside = 1; next } inside && /^\/\/! ```/ { exit }
    inside { sub(/^\/\/! ?/, ""); print }' crates/gateway/src/lib.rs)"

if [ -z "$readme" ] || [ "$readme" != "$crate_doc" ]; then
    echo "README.md's example differs from the crate-level example in crates/gateway/src/lib.rs:" >&2
    diff <(printf '%s\n' "$crate_doc") <(printf '%s\n' "$readme") >&2 || true
    exit 1
fi
echo "README.md's example is gotalk-gateway's crate-level example"
