#!/usr/bin/env python3
"""Medians of spalloc-bench result lines (key=value), per server label and workload.

Usage: python3 benchmarks/summarize.py RESULTS.txt [...]
"""
import statistics
import sys
from collections import defaultdict

# The figures worth a column, per workload (missing keys are skipped).
KEYS = {
    "version": ["req_per_s", "lat_p50_us", "lat_p99_us", "lat_p999_us",
                "server_cpu_us_per_req", "server_vmhwm_kb"],
    "keepalive": ["req_per_s", "lat_p50_us", "lat_p99_us", "lat_p999_us",
                  "server_cpu_us_per_req", "server_vmhwm_kb"],
    "churn": ["jobs_per_s", "cycle_p50_us", "cycle_p99_us", "server_cpu_us_per_job",
              "failed_jobs", "server_vmhwm_kb"],
    "fanout": ["rounds_per_s", "reach_all_p50_us", "reach_all_p99_us", "reach_all_p999_us",
               "after_reply_p50_us", "after_reply_p99_us", "server_cpu_us_per_line"],
    "connections": ["opened", "served", "connect_all_s", "slow_connects", "serve_all_s", "server_vmrss_kb",
                    "server_kb_per_conn", "server_vmhwm_kb"],
    "burst": ["served", "failed", "all_served_s", "conn_to_reply_p50_us",
              "conn_to_reply_p99_us", "conn_to_reply_max_us"],
}


def main():
    groups = defaultdict(list)
    for path in sys.argv[1:]:
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


if __name__ == "__main__":
    main()
