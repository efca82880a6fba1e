#!/usr/bin/env bash
# Build one crate of the workspace for the browser (wasm32-unknown-unknown, release).
#
#   scripts/wasm-build.sh [CRATE]        # CRATE defaults to gotalk-protocol
#
# Two routes (the team notes in shared/TOOLCHAIN.md say why):
#   rustup  - `rustup target add wasm32-unknown-unknown`, then the usual cargo build
#             into target-wasm/.
#   debian  - Debian's rustc-web toolchain, building std from source, into
#             target-wasm-debian/. Used when adding the rustup target fails.
#
# GOTALK_WASM_ROUTE=rustup|debian forces one route (default: auto, rustup first).
# GOTALK_WASM_PROFILE names the cargo profile (default: release; the browser client uses
# `wasm`, tuned for size in the workspace Cargo.toml).
# Prints the route it used and the path of the built .wasm (when the crate has a
# cdylib) on its last lines.
set -euo pipefail

crate="${1:-gotalk-protocol}"
route="${GOTALK_WASM_ROUTE:-auto}"
profile="${GOTALK_WASM_PROFILE:-release}"
target=wasm32-unknown-unknown

cd "$(dirname "$0")/.."

# Succeeds when rustup has the wasm32 target, adding it if needed.
rustup_target_ready() {
    command -v rustup >/dev/null || return 1
    local installed
    installed="$(rustup target list --installed 2>/dev/null)" || return 1
    grep -qx "$target" <<<"$installed" && return 0
    # Adding the target downloads from a host outside the package registries, so it
    # may fail, or hang; the timeout turns a hang into a failure and so a fallback.
    timeout 300 rustup target add "$target"
}

rustup_build() {
    echo "wasm-build: route rustup ($(rustc --version))"
    cargo build --profile "$profile" --locked --target "$target" -p "$crate" --target-dir target-wasm
    out_dir="target-wasm/$target/$profile"
}

debian_build() {
    local pkgs=(rustc-web cargo-web rust-web-src lld) missing=() p
    for p in "${pkgs[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if [ ${#missing[@]} -gt 0 ] || [ ! -x /usr/bin/rustc ] || [ ! -x /usr/bin/cargo ]; then
        echo "wasm-build: installing Debian packages: ${pkgs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q "${pkgs[@]}"
    fi
    echo "wasm-build: route debian ($(/usr/bin/rustc --version))"
    # /usr/bin first so cargo finds Debian's rustc, not rustup's; RUSTC_BOOTSTRAP for
    # -Zbuild-std; wasm-ld because /usr/bin/rust-lld is a broken link.
    PATH="/usr/bin:$PATH" RUSTC_BOOTSTRAP=1 \
        CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld \
        /usr/bin/cargo build --profile "$profile" --locked --target "$target" \
        -Zbuild-std=std,panic_abort -p "$crate" --target-dir target-wasm-debian
    out_dir="target-wasm-debian/$target/$profile"
}

# Only a missing target falls back; a failing build is a real error on either route.
case "$route" in
    rustup)
        rustup_target_ready || { echo "wasm-build: cannot add the rustup target $target" >&2; exit 1; }
        ;;
    debian) ;;
    auto)
        if rustup_target_ready; then
            route=rustup
        else
            echo "wasm-build: rustup target $target unavailable, falling back to the Debian route" >&2
            route=debian
        fi
        ;;
    *)
        echo "wasm-build: GOTALK_WASM_ROUTE must be rustup, debian or auto, not '$route'" >&2
        exit 2
        ;;
esac

if [ "$route" = rustup ]; then
    rustup_build
else
    debian_build
fi

echo "wasm-build: built $crate for $target with the $route route in $out_dir"
wasm="$out_dir/${crate//-/_}.wasm"
if [ -f "$wasm" ]; then
    echo "wasm-build: $wasm"
fi
