#!/usr/bin/env bash
# Counts the server's user-space instructions per request, under callgrind: a figure that stays
# the same however busy the machine is, for changes too small for a timed benchmark to see.
#
#   scripts/instructions.sh [--ws] [--conns N] [--requests N] BENCH_BINARY...
#
# Each BENCH_BINARY is a build of gotalk-bench (say target/release/gotalk-bench, and a copy
# of it built before a change); each runs `bench-server --kind gotalk` (the TCP server with the
# benchmark's `echo`; `gotalk-ws`, the gateway, with --ws) under valgrind, loaded by scripts/instructions-load.py: N connections
# (100 by default) with one 32-byte request in flight on each, 20 per connection to warm up,
# then --requests per connection (100 by default) counted. The kernel's work is not counted.
# Needs valgrind (Debian's `valgrind`) and python3.
set -euo pipefail

conns=100
requests=100
kind=gotalk
framing=tcp
bins=()
while [ $# -gt 0 ]; do
    case "$1" in
        --ws) kind=gotalk-ws; framing=ws; shift ;;
        --conns) conns="$2"; shift 2 ;;
        --requests) requests="$2"; shift 2 ;;
        -*) echo "usage: $0 [--ws] [--conns N] [--requests N] BENCH_BINARY..." >&2; exit 2 ;;
        *) bins+=("$1"); shift ;;
    esac
done
[ ${#bins[@]} -gt 0 ] || { echo "usage: $0 [--ws] [--conns N] [--requests N] BENCH_BINARY..." >&2; exit 2; }
for tool in valgrind callgrind_control callgrind_annotate python3; do
    command -v "$tool" >/dev/null || { echo "instructions: $tool is missing (apt-get install valgrind python3)" >&2; exit 1; }
done

here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for bin in "${bins[@]}"; do
    out="$work/callgrind.out"
    # The server exits when its stdin closes; the fifo keeps it open until the count is done.
    mkfifo "$work/stdin"
    valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$bin" bench-server --kind "$kind" \
        <"$work/stdin" >"$work/addr" 2>"$work/valgrind.log" &
    valgrind_pid=$!
    exec 3>"$work/stdin"
    for _ in $(seq 240); do
        [ -s "$work/addr" ] && break
        sleep 0.5
    done
    addr="$(head -1 "$work/addr")"
    [ -n "$addr" ] || { cat "$work/valgrind.log" >&2; exit 1; }
    python3 "$here/instructions-load.py" "${addr%:*}" "${addr##*:}" "$conns" 20 "$requests" "$valgrind_pid" "$framing"
    exec 3>&-
    wait "$valgrind_pid" || true
    rm -f "$work/stdin"
    # The dump the load asked for is the one with the suffix .1; the other is the rest.
    total="$(callgrind_annotate "$out.$valgrind_pid.1" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')"
    echo "$bin: $((total / (conns * requests))) instructions per request ($total over $((conns * requests)) requests, $conns connections, $framing)"
    rm -f "$out".*
done
