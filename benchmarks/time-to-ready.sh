#!/usr/bin/env bash
# Time to ready (issue 20): a 24-board job on the 1,200-board machine, every SCP exchange
# taking LATENCY_MS (default 1) in the simulated BMPs, for our server and the original.
#
# Ours: `spalloc-server` (no --simulate-bmps) against the BMPs `spalloc-bench time-to-ready
# --simulate-config` serves itself, so the bench counts every exchange and the busiest
# BMP's (one request at a time per BMP: those are the sequential round trips, floor_ms).
# The original: its real BMP code (spinnman over UDP, not run_original.py's fake) against
# `spalloc-bmp-sim --latency-ms`, whose log counts the exchanges. BMPs on 127.23.x.0 and
# ports 22611/22612, so a run.sh in progress is not disturbed.
#
# Usage (from the repository root, after `cargo build --release`):
#   benchmarks/time-to-ready.sh            # REPEAT=5 jobs for ours, 2 for the original
set -euo pipefail
cd "$(dirname "$0")/.."
LATENCY_MS=${LATENCY_MS:-1}
REPEAT=${REPEAT:-5}
VENV=${ORIG_VENV:-/work/orig-venv}
scratch=$(mktemp -d /tmp/spalloc-ttr.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$scratch"
}
trap cleanup EXIT
wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "server on port $1 did not start" >&2
    return 1
}
sed 's/127.16.0.0/127.23.0.0/; s/"port": 22501/"port": 22611/' benchmarks/spin1m-bench.json >"$scratch/ours.json"
echo "# $(date -Is) load: $(cut -d' ' -f1-3 /proc/loadavg) LATENCY_MS=$LATENCY_MS"

target/release/spalloc-server --journal "$scratch/j" --config "$scratch/ours.json" --quiet 2>"$scratch/ours.log" &
pids+=("$!"); ours=$!
wait_port 22611
target/release/spalloc-bench time-to-ready --addr 127.0.0.1:22611 --label ours \
    --simulate-config "$scratch/ours.json" --latency-ms "$LATENCY_MS" --repeat "$REPEAT"
kill "$ours"

if [[ -x "$VENV/bin/spalloc_server" ]]; then
    target/release/spalloc-bmp-sim --config "$scratch/ours.json" --latency-ms "$LATENCY_MS" --log \
        >"$scratch/sim.log" 2>&1 &
    pids+=("$!")
    mkdir -p "$scratch/orig"
    sed 's/127.16.0.0/127.23.0.0/' benchmarks/spin1m-orig.cfg >"$scratch/orig/o.cfg"
    (cd "$scratch/orig" && exec "$VENV/bin/spalloc_server" o.cfg --port 22612 --cold-start >orig.log 2>&1) &
    pids+=("$!")
    wait_port 22612
    sleep 3 # its start-up CMD_VERs to every BMP
    before=$(wc -l <"$scratch/sim.log")
    target/release/spalloc-bench time-to-ready --addr 127.0.0.1:22612 --label original --repeat 1
    sleep 1
    echo "# original: $(tail -n +$((before + 1)) "$scratch/sim.log" | wc -l) exchanges; per BMP:" \
        $(tail -n +$((before + 1)) "$scratch/sim.log" | awk '{print $1}' | sort | uniq -c | awk '{print $2"="$1}')
fi
