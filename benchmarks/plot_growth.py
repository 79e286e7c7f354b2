#!/usr/bin/env python3
"""Plots (PNG) and a Markdown table from growth.sh's result lines: medians per machine size
of create+destroy (core) and replay cost per event. Usage: plot_growth.py RESULTS OUTDIR"""
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results, outdir = sys.argv[1], sys.argv[2]
runs = defaultdict(lambda: defaultdict(list))  # (workload) -> boards -> [line dicts]
for line in open(results):
    if line.startswith("#") or "=" not in line:
        continue
    kv = dict(f.split("=", 1) for f in line.split())
    runs[kv["workload"]][int(kv["boards"] if "boards" in kv else kv["label"])].append(kv)


def med(workload, key):
    sizes = sorted(runs[workload])
    return sizes, [statistics.median(float(r[key]) for r in runs[workload][s]) for s in sizes]


series = [
    ("core", "create_mean_us", "create_job (µs)"),
    ("core", "destroy_mean_us", "destroy_job (µs)"),
    ("core", "pair_mean_us", "create + destroy (µs)"),
    ("replay", "ns_per_event", "replay per event (µs)"),
]
for r in runs["replay"].values():
    for kv in r:
        kv["ns_per_event"] = 1e6 / float(kv["events_per_s"])

fig, ax = plt.subplots(figsize=(6, 4))
rows = []
for workload, key, name in series:
    sizes, ys = med(workload, key)
    ax.plot(sizes, ys, marker="o", label=name)
    rows.append((name, ys))
# A linear reference through the first create+destroy point.
sizes, ys = med("core", "pair_mean_us")
ax.plot(sizes, [ys[0] * s / sizes[0] for s in sizes], "k:", label="linear from 1,200 (create+destroy)")
ax.set_xlabel("boards in the machine")
ax.set_ylabel("µs (median of runs)")
ax.set_title("Cost per operation vs machine size")
ax.legend(fontsize=8)
ax.grid(True, alpha=0.3)
fig.tight_layout()
fig.savefig(f"{outdir}/growth-machine-size.png", dpi=100)

print("| operation | " + " | ".join(f"{s:,} boards" for s in sizes) + " |")
print("|---|" + "---|" * len(sizes))
for name, ys in rows:
    print(f"| {name} | " + " | ".join(f"{y:.2f}" for y in ys) + " |")
