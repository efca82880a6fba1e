#!/usr/bin/env bash
# Builds the browser client bundle: gotalk.js (a classic script), gotalk.mjs (an ES module),
# gotalk_bg.wasm, their types gotalk.d.ts and gotalk.d.mts, and the package.json and README.md
# that make the folder an npm package (`npm pack crates/gateway/client`).
#
#   scripts/build-client.sh            # build into crates/gateway/client/ (commit the result)
#   scripts/build-client.sh --check    # build into target/client-bundle/; fail if the
#                                      # committed bundle is stale or the build is too big
#
# Needs: the wasm32 target (scripts/wasm-build.sh finds or installs it), wasm-bindgen at the
# version of the wasm-bindgen crate in Cargo.lock (GOTALK_INSTALL_TOOLS=1 installs it), and
# Node.js with npm for wasm-opt, which comes from binaryen's npm package, pinned in
# crates/wasm/package-lock.json. (Debian's binaryen 108 predates the final reference-types
# encoding: it rewrites wasm-bindgen's externref table as anyref, which browsers reject.)
#
# Staleness is judged by a hash of the inputs (sources, the wasm's dependency tree, the
# workspace's profiles, this script, tool versions), kept in crates/gateway/client/.inputs, not by the output bytes: the rustup and Debian
# compilers produce different wasm from the same sources.
set -euo pipefail

cd "$(dirname "$0")/.."

mode=build
case "${1:-}" in
    "") ;;
    --check) mode=check ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

# The gzipped size budget for gotalk.js plus the wasm, in bytes.
# 42 kB since per-call deadlines and AbortSignal (about 0.8 kB), refusals a page can see and
# error codes (about 0.6 kB), and resumable sessions (`$resume`
# first, the queue held for `onReconnect`: about 0.7 kB); 42.1 kB since the `offline` event
# parks a pending reconnect (about 0.08 kB); 43.4 kB since requests made while the wasm loads
# go out on the early socket and their answers are read in JavaScript (about 1.25 kB).
budget=$((434 * 100))
# The committed bundle; the test command points this at a stale copy to see the check fail.
committed="${GOTALK_COMMITTED_BUNDLE:-crates/gateway/client}"

bindgen_version() {
    awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}

install_tools() {
    local want
    want="$(bindgen_version)"
    if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$want" ]; then
        if [ "${GOTALK_INSTALL_TOOLS:-0}" != 1 ]; then
            echo "build-client: need wasm-bindgen $want: cargo install wasm-bindgen-cli --version $want" >&2
            exit 1
        fi
        # Not --locked: the CLI's own lock file has pinned a crate the registry no longer
        # serves; its dependencies resolve within their semver ranges instead.
        cargo install wasm-bindgen-cli --version "$want"
    fi
    # npm ci only when the lock file changed since the last install.
    local stamp=crates/wasm/node_modules/.installed-lock
    if ! cmp -s crates/wasm/package-lock.json "$stamp"; then
        (cd crates/wasm && npm ci --no-audit --no-fund)
        cp crates/wasm/package-lock.json "$stamp"
    fi
}

wasm_opt() {
    node crates/wasm/node_modules/binaryen/bin/wasm-opt "$@"
}

# One line per input file with its hash, then what the wasm is built with from the workspace:
# every crate in its tree with version and features (not all of Cargo.lock, which changes
# with any crate's dependencies), the root manifest's settings without its member list and
# dependency table, and the tool versions. Hashed again by the caller.
inputs() {
    git ls-files -co --exclude-standard -- \
        crates/wasm crates/protocol/src crates/protocol/Cargo.toml \
        scripts/build-client.sh scripts/wasm-build.sh |
        grep -v '^crates/wasm/node_modules/' | LC_ALL=C sort | xargs sha256sum
    cargo tree --locked -p gotalk-wasm --target wasm32-unknown-unknown -e normal,build \
        --prefix none -f '{p} {f}' | sed 's| (/[^)]*)||; s| (\*)$||' | LC_ALL=C sort -u
    # [workspace.package], lints and profiles: everything but [workspace], its dependencies
    # and the dev profile (tests' debug info), which the wasm build does not use.
    awk '/^\[/ { keep = ($0 != "[workspace]" && $0 != "[workspace.dependencies]" && $0 !~ /^\[profile\.dev/) } keep' Cargo.toml
    echo "wasm-bindgen $(bindgen_version)"
}

install_tools
hash="$(inputs | sha256sum | awk '{print $1}')"
if [ "$mode" = check ]; then
    have="$(cat "$committed/.inputs" 2>/dev/null || echo none)"
    if [ "$have" != "$hash" ]; then
        echo "build-client: crates/gateway/client/ is stale: its inputs hash $have, the sources hash $hash." >&2
        echo "build-client: run scripts/build-client.sh and commit crates/gateway/client/." >&2
        exit 1
    fi
fi

if [ "$mode" = check ]; then
    out=target/client-bundle
else
    out="$committed"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

GOTALK_WASM_PROFILE=wasm scripts/wasm-build.sh gotalk-wasm | tee "$work/build.log"
wasm="$(tail -n 1 "$work/build.log" | sed 's/^wasm-build: //')"

wasm-bindgen --target no-modules --no-typescript --out-dir "$work" --out-name gotalk "$wasm"
# The features Rust enables by default for wasm32, and no others (--all-features would let
# wasm-opt use proposals browsers do not ship).
wasm_opt -Oz --converge --strip-debug --strip-producers \
    --enable-bulk-memory --enable-bulk-memory-opt --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
    -o "$work/gotalk_bg.opt.wasm" "$work/gotalk_bg.wasm"

# The workspace's [workspace.package] values; the package.json below repeats them.
workspace_value() {
    awk -F'"' -v key="$1" '$1 == key " = " { print $2; exit }' Cargo.toml
}
version="$(workspace_value version)"
api="$(sed "s/@VERSION@/$version/" crates/wasm/js/api.js)"
# wasm-bindgen's loader, run only when the wasm loads (`glue()`, from `load` in api.js): as
# one statement run with the script, its body was compiled and run on every page load, and
# Chromium had V8 put that compiled code in the script's code cache on its second load, all
# before the page's next script ran. A function not yet called costs a pre-parse only.
glue="$(awk '
    NR == 1 && $0 == "let wasm_bindgen = (function(exports) {" {
        print "let wasm_bindgen = null;"
        print "const glue = () => wasm_bindgen || (wasm_bindgen = (function(exports) {"
        opened = 1
        next
    }
    $0 == "})({ __proto__: null });" && opened { print "})({ __proto__: null }));"; closed = 1; next }
    { print }
    END { if (!opened || !closed) exit 1 }
' "$work/gotalk.js")" || {
    echo "build-client: wasm-bindgen's loader is not the one statement expected: see glue= in $0" >&2
    exit 1
}
banner="// gotalk.js $version: the gotalk browser client, in Rust compiled to wasm (gotalk_bg.wasm).
// Built by scripts/build-client.sh from crates/wasm/; do not edit."

# terser compresses and renames locals; property names (the page's API) are left alone.
# It reads the whole script, so the entries are assembled first and minified after.
minify() {
    local input="$1"
    shift
    node crates/wasm/node_modules/terser/bin/terser "$input" --ecma 2020 --compress --mangle "$@" \
        -o "$input.min"
}

# The classic script asks for its wasm by version (the first 8 bytes of its SHA-256, as the
# gateway's Assets::version names it), which the gateway serves as immutable: a returning page
# takes the wasm from its cache without a round trip to revalidate it. Other servers ignore
# the query.
wasm_version="$(sha256sum "$work/gotalk_bg.opt.wasm" | cut -c1-16)"
{
    echo "(function () {"
    echo "'use strict';"
    echo "const scriptUrl = (typeof document !== 'undefined' && document.currentScript && document.currentScript.src) || '';"
    echo "const defaultWasm = () => new URL('gotalk_bg.wasm?v=$wasm_version', scriptUrl || (typeof location !== 'undefined' ? location.href : 'http://localhost/'));"
    echo "$glue"
    echo "$api"
    echo "globalThis.gotalk = gotalk;"
    echo "})();"
} >"$work/classic.js"
{
    echo "const scriptUrl = import.meta.url;"
    # Literally this expression, which bundlers (Vite, webpack 5, Parcel…) take for an asset
    # they emit beside the bundle, rewriting the URL.
    echo "const defaultWasm = () => new URL('./gotalk_bg.wasm', import.meta.url);"
    echo "$glue"
    echo "$api"
    echo "export default gotalk;"
    echo "export { Sock, Handlers, EventEmitter };"
    # gotalk.d.mts declares each of these; e2e/tests/bundler.spec.ts checks the two agree.
    echo "export const { version, ready, configure, connection, open, defaultHandlers, handle, handleRequest,"
    echo "  handleBufferRequest, handleNotification, handleBufferNotification, handleStreamRequest,"
    echo "  handleBufferStreamRequest, protocol, Buf, ErrAbnormal, ErrUnsupported, ErrInvalidMsg, ErrTimeout } = gotalk;"
} >"$work/module.mjs"

minify "$work/classic.js"
minify "$work/module.mjs" --module

mkdir -p "$out"
{
    echo "$banner"
    echo "// A classic script: defines the global \`gotalk\` and loads gotalk_bg.wasm from its own folder."
    cat "$work/classic.js.min"
    echo
} >"$out/gotalk.js"
{
    echo "$banner"
    echo "// The ES module entry: \`import gotalk from '/gotalk/gotalk.mjs'\`."
    cat "$work/module.mjs.min"
    echo
} >"$out/gotalk.mjs"
cp "$work/gotalk_bg.opt.wasm" "$out/gotalk_bg.wasm"
cp crates/wasm/js/gotalk.d.ts crates/wasm/js/gotalk.d.mts crates/wasm/js/README.md "$out/"
# "type": "module" makes TypeScript read gotalk.d.ts as the ES module gotalk.d.mts imports.
cat >"$out/package.json" <<EOF
{
  "name": "gotalk-client",
  "version": "$version",
  "description": "The gotalk browser client: Rust compiled to wasm, with the gotalk.js API",
  "license": "$(workspace_value license)",
  "repository": "$(workspace_value repository)",
  "type": "module",
  "main": "./gotalk.mjs",
  "types": "./gotalk.d.mts",
  "exports": {
    ".": { "types": "./gotalk.d.mts", "default": "./gotalk.mjs" },
    "./gotalk.mjs": { "types": "./gotalk.d.mts", "default": "./gotalk.mjs" },
    "./gotalk.js": { "types": "./gotalk.d.ts", "default": "./gotalk.js" },
    "./gotalk_bg.wasm": "./gotalk_bg.wasm",
    "./package.json": "./package.json"
  },
  "files": ["gotalk.mjs", "gotalk.d.mts", "gotalk.js", "gotalk.d.ts", "gotalk_bg.wasm"]
}
EOF
echo "$hash" >"$out/.inputs"

js_gz=$(gzip -9 -c "$out/gotalk.js" | wc -c)
wasm_gz=$(gzip -9 -c "$out/gotalk_bg.wasm" | wc -c)
total=$((js_gz + wasm_gz))
echo "build-client: gotalk.js $(wc -c <"$out/gotalk.js") bytes ($js_gz gzipped)," \
    "gotalk_bg.wasm $(wc -c <"$out/gotalk_bg.wasm") bytes ($wasm_gz gzipped):" \
    "$total bytes gzipped, budget $budget"
if [ "$total" -gt "$budget" ]; then
    echo "build-client: the bundle is over its budget of $budget bytes gzipped" >&2
    exit 1
fi

if [ "$mode" = check ]; then
    for f in gotalk.js gotalk.mjs gotalk_bg.wasm gotalk.d.ts gotalk.d.mts package.json README.md; do
        [ -s "$committed/$f" ] || { echo "build-client: $committed/$f is missing" >&2; exit 1; }
    done
    echo "build-client: crates/gateway/client/ is current"
else
    echo "build-client: wrote $out/"
fi
