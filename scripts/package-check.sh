#!/usr/bin/env bash
# Packages every publishable crate as crates.io would, then builds an app against the
# packages themselves (unpacked .crate files, not the workspace's folders):
#
#   scripts/package-check.sh
#
# The app is examples/axum-app's source with a manifest of its own whose gotalk crates come
# from target/package/. Its binary, target/debug/gotalk-packaged-app, is what
# e2e/tests/packaged.spec.ts runs in Chromium: a crate that packaged without its browser
# bundle would fail there (or already here, in the gateway's build script).
set -euo pipefail

cd "$(dirname "$0")/.."

# In dependency order; cargo verifies each by building it from its .crate, against the
# others through a local registry.
publishable=(gotalk-protocol gotalk gotalk-cluster gotalk-gateway gotalk-cli)
args=()
for crate in "${publishable[@]}"; do args+=(-p "$crate"); done
# cargo verifies each package against the others through a registry in target/package/,
# and keeps what it unpacks from there under $CARGO_HOME by name and version only: a second
# run would build against the first run's packages. So both go before packaging.
rm -rf target/package
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
for crate in "${publishable[@]}"; do
    # Local registries' folders are named for a registry without a name: "-<hash>".
    rm -rf "$cargo_home"/registry/src/-*/"$crate"-[0-9]* "$cargo_home"/registry/cache/-*/"$crate"-[0-9]*
done
# --allow-dirty: a developer checks the tree as it is; CI's clone is clean anyway.
cargo package --locked --allow-dirty "${args[@]}"

version="$(cargo metadata --format-version 1 --no-deps |
    node -e 'const m = JSON.parse(require("fs").readFileSync(0)); console.log(m.packages.find(p => p.name === "gotalk").version)')"
packages="$PWD/target/package"
for crate in "${publishable[@]}"; do
    dir="$packages/$crate-$version"
    # cargo leaves each verified package unpacked beside its .crate; unpack it if not.
    if [ ! -f "$dir/Cargo.toml" ]; then
        tar -xzf "$packages/$crate-$version.crate" -C "$packages"
    fi
    # What a registry user gets must carry the browser bundle.
    if [ "$crate" = gotalk-gateway ]; then
        for file in gotalk.js gotalk.mjs gotalk_bg.wasm gotalk.d.ts; do
            [ -s "$dir/client/$file" ] || { echo "package-check: $crate has no client/$file" >&2; exit 1; }
        done
    fi
done

app="$PWD/target/package-app"
rm -rf "$app"
mkdir -p "$app"
cp -r examples/axum-app/src "$app/src"
# The workspace's lock file pins the same versions the workspace was tested with.
cp Cargo.lock "$app/Cargo.lock"
cat >"$app/Cargo.toml" <<TOML
[package]
name = "gotalk-packaged-app"
version = "0.0.0"
edition = "2021"
publish = false

# Not a member of the repository's workspace.
[workspace]

[dependencies]
gotalk = "$version"
gotalk-gateway = "$version"
$(sed -n 's/^\(axum\|rand\|serde\|serde_json\|tracing-subscriber\) = /\1 = /p' Cargo.toml)
# The workspace's tokio line is the core's minimum; the app adds what examples/axum-app does.
tokio = { version = "1.40", features = ["rt-multi-thread", "macros", "net", "signal", "fs", "io-util"] }

# The packaged crates, as a registry would hand them out.
[patch.crates-io]
gotalk-protocol = { path = "$packages/gotalk-protocol-$version" }
gotalk = { path = "$packages/gotalk-$version" }
gotalk-gateway = { path = "$packages/gotalk-gateway-$version" }
TOML
# The workspace's target folder: the registry crates are the same, so only ours rebuild.
cargo build --manifest-path "$app/Cargo.toml" --target-dir target
echo "package-check: built target/debug/gotalk-packaged-app against target/package/*-$version"
