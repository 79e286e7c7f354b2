#!/usr/bin/env bash
# Side-by-side benchmark run: starts our server (release build, fresh journal, its BMPs
# simulated over loopback UDP by spalloc-bmp-sim in a separate process) and, if the original's virtualenv exists, the original Python server
# (fake in-process BMPs, FAKE_BMP_DELAY=0), then runs every network workload against each,
# alternating, REPEATS times. Result lines go to stdout and to $OUT.
#
# Usage (from the repository root, after `cargo build --release`):
#   benchmarks/run.sh                       # both servers, 10 s per run, 3 repeats
#   SECONDS_PER_RUN=5 REPEATS=5 benchmarks/run.sh
#   SERVERS=ours benchmarks/run.sh          # ours only
#   SERVERS="ours echo" WORKLOADS=version benchmarks/run.sh   # with the floor (echo-server)
#   WORKLOADS="keepalive churn" benchmarks/run.sh
#   JOURNAL_PARENT=/dev/shm benchmarks/run.sh   # journal on tmpfs (no disk flush latency)
#   OURS_BIN=/path/to/older/spalloc-server SERVERS=ours benchmarks/run.sh   # a regression check
#   SERVERS="ours inproc original echo" WORKLOADS="version keepalive churn" \
#       SECONDS_PER_RUN=5 REPEATS=3 benchmarks/run.sh      # issue 20's comparisons, then
#   python3 benchmarks/summarize.py --ratios $OUT         # ours vs floor, ours vs original
# "inproc" is ours with its BMPs simulated inside the server (--simulate-bmps; its CPU
# figures then include the simulated hardware's), on its own BMP addresses (127.17.x).
# Then: python3 benchmarks/summarize.py $OUT
set -euo pipefail
cd "$(dirname "$0")/.."

S=${SECONDS_PER_RUN:-10}
R=${REPEATS:-3}
SERVERS=${SERVERS:-"ours original"}
WORKLOADS=${WORKLOADS:-"version keepalive churn churn-notify fanout connections burst"}
VENV=${ORIG_VENV:-/work/orig-venv}
ORACLE=${ORACLE:-/work/shared/oracle}
# Where our journal lives: a disk directory (default /tmp; fsync is real) or /dev/shm
# (tmpfs: fsync costs nothing, which separates the server's own latency from the disk's).
JOURNAL_PARENT=${JOURNAL_PARENT:-/tmp}
OUT=${OUT:-/tmp/spalloc-bench-$(date +%Y%m%d-%H%M%S).txt}
BENCH=target/release/spalloc-bench
# Our server binary: another build (e.g. an older commit's) to compare against, same bench.
OURS_BIN=${OURS_BIN:-target/release/spalloc-server}
OURS_PORT=22501
ORIG_PORT=22502
ECHO_PORT=22503
INPROC_PORT=22504

# 10,000 idle clients need 10,000 descriptors in the server and as many in the bench.
ulimit -n "$(ulimit -Hn)"

scratch=$(mktemp -d /tmp/spalloc-bench-run.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$scratch"
    [[ -n "${journal:-}" ]] && rm -rf "$journal"
    [[ -n "${inproc_journal:-}" ]] && rm -rf "$inproc_journal"
    return 0
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

for port in $OURS_PORT $ORIG_PORT $ECHO_PORT $INPROC_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is already in use (another run?): stop it first" >&2
        exit 1
    fi
done

declare -A PID PORT
if [[ " $SERVERS " == *" ours "* ]]; then
    # The BMP simulator runs as its own process, so the server's CPU figures hold only the
    # server's work (the SCP client included), not the simulated hardware's.
    target/release/spalloc-bmp-sim --config benchmarks/spin1m-bench.json \
        >"$scratch/bmp-sim.log" 2>&1 &
    pids+=("$!")
    journal=$(mktemp -d "$JOURNAL_PARENT/spalloc-bench-journal.XXXXXX")
    "$OURS_BIN" --journal "$journal/j" \
        --config benchmarks/spin1m-bench.json --quiet \
        2>"$scratch/ours.log" &
    PID[ours]=$!; PORT[ours]=$OURS_PORT; pids+=("$!")
    wait_port $OURS_PORT
fi
if [[ " $SERVERS " == *" inproc "* ]]; then
    # Ours again, simulating its BMPs in-process, at other addresses than the simulator
    # process above serves.
    sed -e 's/127\.16\.0\.0/127.17.0.0/' benchmarks/spin1m-bench.json >"$scratch/inproc.json"
    inproc_journal=$(mktemp -d "$JOURNAL_PARENT/spalloc-bench-journal.XXXXXX")
    "$OURS_BIN" --journal "$inproc_journal/j" --port $INPROC_PORT \
        --config "$scratch/inproc.json" --simulate-bmps --quiet \
        2>"$scratch/inproc.log" &
    PID[inproc]=$!; PORT[inproc]=$INPROC_PORT; pids+=("$!")
    wait_port $INPROC_PORT
fi
if [[ " $SERVERS " == *" original "* ]]; then
    mkdir -p "$scratch/orig" && cp benchmarks/spin1m-orig.cfg "$scratch/orig/bench.cfg"
    (cd "$scratch/orig" && FAKE_BMP_DELAY=0 exec "$VENV/bin/python" "$ORACLE/run_original.py" \
        bench.cfg --port $ORIG_PORT --cold-start >orig.log 2>&1) &
    PID[original]=$!; PORT[original]=$ORIG_PORT; pids+=("$!")
    wait_port $ORIG_PORT
fi

if [[ " $SERVERS " == *" echo "* ]]; then
    # The floor: a line server that does nothing but answer (spalloc-bench echo-server).
    "$BENCH" echo-server --addr "127.0.0.1:$ECHO_PORT" 2>"$scratch/echo.log" &
    PID[echo]=$!; PORT[echo]=$ECHO_PORT; pids+=("$!")
    wait_port $ECHO_PORT
fi

{
    echo "# $(date -Is) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "# SECONDS_PER_RUN=$S REPEATS=$R SERVERS=$SERVERS JOURNAL_PARENT=$JOURNAL_PARENT load: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT"

run() { # label workload args...
    local label=$1 w=$2; shift 2
    "$BENCH" "$w" --label "$label" --addr "127.0.0.1:${PORT[$label]}" \
        --server-pid "${PID[$label]}" "$@" | tee -a "$OUT" || echo "# $label $w failed" | tee -a "$OUT"
}

for i in $(seq 1 "$R"); do
    for w in $WORKLOADS; do
        for label in $SERVERS; do
            # The echo server answers every line with the version reply: version only.
            [[ $label == echo && $w != version ]] && continue
            case $w in
            version | keepalive) run "$label" "$w" --clients 50 --seconds "$S" ;;
            churn) run "$label" churn --clients 10 --boards 1 --seconds "$S" ;;
            churn-notify) run "$label" churn --notify --clients 10 --boards 1 --seconds "$S" ;;
            fanout) run "$label" fanout --watchers 100 --seconds "$S" ;;
            connections) run "$label" connections --connections 10000 ;;
            burst) run "$label" burst --connections 1000 ;;
            esac
        done
    done
done
echo "# $(date -Is) end, load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"
echo "# results in $OUT" >&2
