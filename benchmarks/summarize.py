#!/usr/bin/env python3
"""Medians of spalloc-bench result lines (key=value), per server label and workload.

Usage: python3 benchmarks/summarize.py [--ratios] RESULTS.txt [...]

--ratios also prints issue 20's comparisons, from medians over the files given: our server
CPU per keepalive against the echo floor's per `version` request (target: at most 1.3x),
ours (`inproc`: BMPs simulated in-process) against the original in churn jobs/s (target: at
least 2x), and our server's own CPU per churned job (`ours`: simulator out of process)
against the original's (target: at most 0.5x).
"""
import statistics
import sys
from collections import defaultdict

# The figures worth a column, per workload (missing keys are skipped).
KEYS = {
    "version": ["req_per_s", "lat_p50_us", "lat_p99_us", "lat_p999_us",
                "server_cpu_us_per_req", "server_user_us_per_req", "server_vmhwm_kb"],
    "keepalive": ["req_per_s", "lat_p50_us", "lat_p99_us", "lat_p999_us",
                  "server_cpu_us_per_req", "server_user_us_per_req", "server_vmhwm_kb"],
    "churn": ["jobs_per_s", "cycle_p50_us", "cycle_p99_us", "server_cpu_us_per_job",
              "failed_jobs", "server_vmhwm_kb"],
    "fanout": ["rounds_per_s", "reach_all_p50_us", "reach_all_p99_us", "reach_all_p999_us",
               "after_reply_p50_us", "after_reply_p99_us", "server_cpu_us_per_line"],
    "connections": ["opened", "served", "connect_all_s", "slow_connects", "serve_all_s", "server_vmrss_kb",
                    "server_kb_per_conn", "server_vmhwm_kb"],
    "burst": ["served", "failed", "all_served_s", "conn_to_reply_p50_us",
              "conn_to_reply_p99_us", "conn_to_reply_max_us"],
}


def median_of(groups, name, label, key):
    vals = [float(r[key]) for r in groups.get((name, label), []) if key in r]
    return statistics.median(vals) if vals else None


def ratios(groups):
    """Issue 20's targets, each as `ours / reference` with the target beside it."""
    rows = [
        ("keepalive CPU/req, ours vs echo floor (version)", "<= 1.3",
         median_of(groups, "keepalive", "ours", "server_cpu_us_per_req"),
         median_of(groups, "version", "echo", "server_cpu_us_per_req"), "us"),
        ("churn jobs/s, ours (in-process BMPs) vs original", ">= 2",
         median_of(groups, "churn", "inproc", "jobs_per_s"),
         median_of(groups, "churn", "original", "jobs_per_s"), "jobs/s"),
        ("churn server CPU/job, ours (simulator apart) vs original", "<= 0.5",
         median_of(groups, "churn", "ours", "server_cpu_us_per_job"),
         median_of(groups, "churn", "original", "server_cpu_us_per_job"), "us"),
    ]
    for what, target, ours, ref, unit in rows:
        if ours is None or ref is None or ref == 0:
            print(f"{what}: not measured (run the workloads and servers it compares)")
            continue
        print(f"{what}: {ours:g} vs {ref:g} {unit} = {ours / ref:.2f}x (target {target})")
    # The keepalive ratio round by round: run.sh measures the servers one after another in
    # each round, so pairing the i-th keepalive run of ours with the i-th `version` run of
    # the echo server compares figures taken seconds apart, under the same load from the
    # rest of the machine (the kernel's share of the server's CPU moves with it).
    ours = [float(r["server_cpu_us_per_req"]) for r in groups.get(("keepalive", "ours"), [])]
    echo = [float(r["server_cpu_us_per_req"]) for r in groups.get(("version", "echo"), [])]
    pairs = [o / e for o, e in zip(ours, echo) if e > 0]
    if pairs:
        print("keepalive CPU/req ÷ echo floor, round by round: "
              + ", ".join(f"{p:.2f}" for p in pairs)
              + f" (median {statistics.median(pairs):.2f}x)")


def main():
    args = sys.argv[1:]
    want_ratios = "--ratios" in args
    args = [a for a in args if a != "--ratios"]
    groups = defaultdict(list)
    for path in args:
        for line in open(path):
            if line.startswith("#") or "=" not in line:
                continue
            kv = dict(f.split("=", 1) for f in line.split() if "=" in f)
            w = kv.get("workload", "?")
            name = w + ("-notify" if kv.get("wait") == "notify" else "")
            groups[(name, kv.get("label", "-"))].append(kv)
    for (name, label), runs in sorted(groups.items()):
        w = name.split("-")[0]
        cells = []
        for k in KEYS.get(w, []):
            vals = [float(r[k]) for r in runs if k in r]
            if vals:
                cells.append(f"{k}={statistics.median(vals):g}")
        print(f"{name:13} {label:9} n={len(runs)} " + " ".join(cells))
    if want_ratios:
        ratios(groups)


if __name__ == "__main__":
    main()
