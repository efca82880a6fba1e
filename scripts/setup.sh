#!/usr/bin/env bash
# Installs what scripts/test.sh needs on Debian with rustup, and only what is missing: on a
# machine that has everything it installs nothing, reaches no network and takes a second.
#
#   scripts/setup.sh
#
# Debian packages are installed as root, or through sudo when run as another user; with
# neither, it prints the apt-get command to run and fails. Everything else goes into the
# user's rustup and cargo. scripts/test.sh runs this first.
set -euo pipefail

cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND="${DEBIAN_FRONTEND:-noninteractive}"

# The Debian packages the checks need, one line each: `deb PACKAGE [PROBE]`. PACKAGE counts
# as present when PROBE is there (a command on PATH, or an absolute path), so a tool that
# came from elsewhere (nodesource's node, a Chromium at $CHROMIUM) is not installed again;
# without PROBE, when dpkg has PACKAGE installed.
debian_packages() {
    # cargo's linker, and jemalloc's C sources in the gotalk binary's allocator.
    deb gcc cc
    deb libc6-dev
    deb make make
    # The e2e suite: Playwright (from npm, without its browser download) in Debian's Chromium.
    deb chromium "${CHROMIUM:-/usr/bin/chromium}"
    deb nodejs node
    deb npm npm
    # The real-peer tests build the original Go gotalk with Debian's Go, offline.
    deb golang-go go
    # The cluster tests start their own servers on free ports (crates/tests/src/servers.rs),
    # never the services these packages may start on the default ports 6379 and 4222:
    # the Redis bus (pub/sub, ACL users limited to a prefix),
    deb redis-server redis-server
    # with redis-cli, which joins the Redis Cluster tests' nodes (`--cluster create`),
    deb redis-tools redis-cli
    # the NATS bus (a user whose subjects are limited to a prefix),
    deb nats-server nats-server
    # and the load balancer in front of several gateways (health checks, WebSocket tunnels).
    deb haproxy haproxy
    # packaging/gotalk.service is checked offline with systemd-analyze (verify, security,
    # syscall-filter), and the binary's system calls traced against its filter with strace.
    deb systemd systemd-analyze
    deb strace strace
    # The client's default trust store, as a user's machine has it.
    deb ca-certificates /etc/ssl/certs/ca-certificates.crt
}

# The Debian route of scripts/wasm-build.sh, for when rustup cannot add the wasm32 target;
# wasm-build.sh asks dpkg for the same packages, so it finds them and needs no root itself.
debian_wasm_packages() {
    deb rustc-web
    deb cargo-web
    deb rust-web-src
    deb lld
}

missing_debs=()
deb() {
    local pkg="$1" probe="${2:-}"
    case "$probe" in
        "") dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ;;
        /*) [ -e "$probe" ] ;;
        # Daemons land in /usr/sbin, which is not on every user's PATH.
        *) command -v "$probe" >/dev/null || [ -x "/usr/sbin/$probe" ] ;;
    esac || missing_debs+=("$pkg")
}

# A file marks the one `apt-get update`, because `step` runs each step in a subshell.
apt_updated="$(mktemp -d)/apt-updated"
trap 'rm -rf "$(dirname "$apt_updated")"' EXIT

# apt_install PKG...: as root, through sudo, or not at all (then says what to run).
# A caller may set a local apt_flags to change the install options.
apt_flags=(--no-install-recommends)
apt_install() {
    local as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null; then
            cannot_install "$@"
        fi
        as_root=(sudo)
    fi
    if command -v apt-get >/dev/null; then
        if [ ! -e "$apt_updated" ]; then
            "${as_root[@]}" env DEBIAN_FRONTEND="$DEBIAN_FRONTEND" apt-get update -q ||
                cannot_install "$@"
            touch "$apt_updated"
        fi
        "${as_root[@]}" env DEBIAN_FRONTEND="$DEBIAN_FRONTEND" \
            apt-get install -y -q "${apt_flags[@]}" "$@" || cannot_install "$@"
    else
        cannot_install "$@"
    fi
}

cannot_install() {
    echo "setup: could not install the missing Debian packages: $*" >&2
    echo "setup: install them as root (or with sudo), then run this again:" >&2
    echo "    apt-get update && apt-get install -y ${apt_flags[*]} $*" >&2
    exit 1
}

# step NAME FUNCTION: runs FUNCTION and prints how long it took; fails when it fails.
step() {
    local name="$1" t0=$SECONDS rc
    echo "==> [setup] $name"
    # A subshell outside any `||`, so `set -e` still stops a failing function.
    set +e
    (set -e; "$2")
    rc=$?
    set -e
    echo "==> [setup] $name: $((SECONDS - t0))s (exit $rc)"
    return "$rc"
}

setup_debian() {
    debian_packages
    if [ ${#missing_debs[@]} -gt 0 ]; then
        apt_install "${missing_debs[@]}"
    fi
    "${CHROMIUM:-/usr/bin/chromium}" --version
    echo "node $(node --version), npm $(npm --version)"
    go version
    # nats-server and haproxy live in /usr/sbin, which not every user has on PATH; `sed`
    # reads all of haproxy's output (a `head` would leave it a broken pipe under pipefail).
    local sbin="$PATH:/usr/sbin:/usr/local/sbin"
    PATH="$sbin" redis-server --version
    PATH="$sbin" nats-server --version
    PATH="$sbin" haproxy -v | sed -n 1p
}

setup_rust() {
    rustup --version 2>/dev/null
    cargo --version
    local c missing=() installed
    # Adding a component reaches rustup's host, so ask only for what is missing.
    installed="$(rustup component list --installed)"
    for c in rustfmt clippy; do
        # rustup lists installed components as NAME-TARGET.
        grep -q "^$c-" <<<"$installed" || missing+=("$c")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        rustup component add "${missing[@]}"
    fi
    cargo fmt --version
    cargo clippy --version
}

# rustup's wasm32 target, or Debian's packages for scripts/wasm-build.sh's fallback: the
# target comes from a host outside the package registries, which may fail or hang.
setup_wasm_target() {
    local target=wasm32-unknown-unknown
    if grep -qx "$target" <<<"$(rustup target list --installed)"; then
        echo "rustup target $target: installed"
    elif timeout 300 rustup target add "$target"; then
        echo "rustup target $target: added"
    else
        echo "rustup target $target unavailable: installing Debian's route for scripts/wasm-build.sh"
        # With recommends (rust-web-llvm), as wasm-build.sh installs them and as tried.
        local apt_flags=()
        debian_wasm_packages
        if [ ${#missing_debs[@]} -gt 0 ]; then
            apt_install "${missing_debs[@]}"
        fi
        /usr/bin/rustc --version
    fi
}

# Installed by cargo into the user's cargo bin directory, which must be on PATH.
on_path() {
    command -v "$1" >/dev/null && return 0
    echo "setup: $1 is installed but not on PATH: add ${CARGO_HOME:-$HOME/.cargo}/bin to PATH" >&2
    return 1
}

# wasm-bindgen's CLI must match the wasm-bindgen crate in Cargo.lock exactly.
setup_wasm_bindgen() {
    local want
    want="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
    if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$want" ]; then
        # Not --locked: the CLI's lock file pins a crate version the registry no longer serves.
        cargo install wasm-bindgen-cli --version "$want"
        on_path wasm-bindgen
    fi
    wasm-bindgen --version
}

# cargo-deny for the supply chain stage, built from crates.io with its own lock file.
setup_cargo_deny() {
    if ! cargo deny --version >/dev/null 2>&1; then
        cargo install cargo-deny --locked
    fi
    cargo deny --version
}

# The brief fuzz stage of scripts/test.sh needs nightly and cargo-fuzz. The nightly comes
# from rustup's host, which may be unreachable on a given day: then the stage is skipped
# (scripts/test.sh says so), since the corpus replay runs on stable anyway.
setup_fuzz() {
    if ! cargo +nightly --version >/dev/null 2>&1; then
        if ! timeout 600 rustup toolchain install nightly --profile minimal; then
            echo "==> [setup] nightly could not be installed (rustup's host unreachable?):" \
                "the fuzz stage will be skipped"
            return 0
        fi
    fi
    cargo +nightly --version
    if [ "$(cargo +nightly fuzz --version 2>/dev/null | awk '{print $2}')" != "0.13.2" ]; then
        cargo install cargo-fuzz --version 0.13.2 --locked
    fi
    cargo +nightly fuzz --version
}

# Debian first: cargo install needs its C linker.
step "debian packages" setup_debian
step "rust components" setup_rust
step "wasm32 target" setup_wasm_target
step "wasm-bindgen" setup_wasm_bindgen
step "cargo-deny" setup_cargo_deny
step "nightly and cargo-fuzz" setup_fuzz
