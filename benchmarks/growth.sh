#!/usr/bin/env bash
# How cost grows with the facility (issue 20), offline part: create+destroy (`core`) and
# replay per event (`replay`) on machines of 1,200, 4,800 and 12,000 boards (20x20, 40x40
# and 50x80 triads; configurations written by make_config.py), and the core's cost per
# operation with 10, 1,000 and 10,000 jobs queued (`queue`), and a live server's cost of a
# change with 10, 1,000 and 10,000 watchers (`fanout`). Result lines go to
# benchmarks/results/growth-latest.txt, plots to benchmarks/growth-*.png (matplotlib from a
# virtualenv under /tmp, created on first use).
#
# Usage (from the repository root, after `cargo build --release`):
#   benchmarks/growth.sh                  # PAIRS=20000 EVENTS=200000 REPEATS=3
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-20000}
EVENTS=${EVENTS:-200000}
REPEATS=${REPEATS:-3}
OUT=${OUT:-benchmarks/results/growth-latest.txt}
PLOT_VENV=${PLOT_VENV:-/tmp/spalloc-plot-venv}
B=target/release/spalloc-bench
SERVER=target/release/spalloc-server
WATCH_PORT=${WATCH_PORT:-22597}
WATCH_SECONDS=${WATCH_SECONDS:-3}
scratch=$(mktemp -d /tmp/spalloc-growth.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

cp benchmarks/spin1m-bench.json "$scratch/1200.json"
python3 benchmarks/make_config.py 40 40 >"$scratch/4800.json"
python3 benchmarks/make_config.py 50 80 >"$scratch/12000.json"
{
    echo "# $(date -Is) $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg) PAIRS=$PAIRS EVENTS=$EVENTS REPEATS=$REPEATS"
    for i in $(seq 1 "$REPEATS"); do
        for boards in 1200 4800 12000; do
            "$B" core --config "$scratch/$boards.json" --pairs "$PAIRS" --label "$boards"
            "$B" replay --config "$scratch/$boards.json" --events "$EVENTS" --repeat 1 \
                --journal "$scratch/journal" --label "$boards"
        done
        for queued in 10 1000 10000; do
            "$B" queue --queued "$queued" --ops 2000 --label "q$queued"
        done
    done
    # Watchers: W connections notify_job() on every job; per change, the server's CPU per
    # notification line and the time until the last watcher has it. One server (1,200-board
    # machine, simulated BMPs) with enough descriptors for 10,000 watchers.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    if [[ $(ulimit -n) -lt 10200 ]]; then
        echo "# watchers: skipped, ulimit -n is $(ulimit -n) (10,200 needed)" >&2
    else
        "${SERVER}" --journal "$scratch/watch-journal" --config "$scratch/1200.json" \
            --simulate-bmps --port "$WATCH_PORT" --quiet >/dev/null 2>"$scratch/watch-server.log" &
        server_pid=$!
        # (This block is a subshell, piped to tee: its own trap stops the server if a run fails.)
        trap 'kill "$server_pid" 2>/dev/null || true' EXIT
        for _ in $(seq 1 100); do
            (exec 3<>"/dev/tcp/127.0.0.1/$WATCH_PORT") 2>/dev/null && break
            sleep 0.1
        done
        for i in $(seq 1 "$REPEATS"); do
            for watchers in 10 1000 10000; do
                "$B" fanout --addr "127.0.0.1:$WATCH_PORT" --watchers "$watchers" \
                    --seconds "$WATCH_SECONDS" --warmup 1 --server-pid "$server_pid" \
                    --label "w$watchers"
            done
        done
        kill "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    fi
    echo "# end load: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT"

if [[ ! -x "$PLOT_VENV/bin/python" ]] || ! "$PLOT_VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    python3 -m venv "$PLOT_VENV"
    "$PLOT_VENV/bin/pip" install --quiet matplotlib
fi
"$PLOT_VENV/bin/python" benchmarks/plot_growth.py "$OUT" benchmarks
