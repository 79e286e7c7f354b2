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
    if kv["workload"] == "queue":
        x = kv["queued"]
    elif kv["workload"] == "fanout":
        x = kv["watchers"]
    else:
        x = kv.get("boards", kv["label"])
    runs[kv["workload"]][int(x)].append(kv)


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

# Queued jobs: the core's cost per operation with N jobs waiting.
fig, ax = plt.subplots(figsize=(6, 4))
qrows = []
for key, name in [
    ("create_destroy_us", "create + destroy of one more job (µs)"),
    ("keepalive_us", "keepalive of a queued job (µs)"),
    ("tick_us", "tick (µs)"),
    ("drain_us_per_job", "allocating a queued job when the machine frees (µs/job)"),
]:
    qs, ys = med("queue", key)
    ax.plot(qs, ys, marker="o", label=name)
    qrows.append((name, ys))
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("jobs queued")
ax.set_ylabel("µs (median of runs)")
ax.set_title("Cost per operation vs queue length (1,200 boards)")
ax.legend(fontsize=7)
ax.grid(True, alpha=0.3)
fig.tight_layout()
fig.savefig(f"{outdir}/growth-queue.png", dpi=100)
print()
print("| operation | " + " | ".join(f"{q:,} queued" for q in qs) + " |")
print("|---|" + "---|" * len(qs))
for name, ys in qrows:
    print(f"| {name} | " + " | ".join(f"{y:.2f}" for y in ys) + " |")


# Watchers: a live server's cost of one change seen by W watchers.
if runs["fanout"]:
    fig, ax = plt.subplots(figsize=(6, 4))
    wrows = []
    for key, name in [
        ("server_cpu_us_per_line", "server CPU per notification line (µs)"),
        ("reach_all_p50_us", "change sent to last watcher told, p50 (µs)"),
        ("after_reply_p50_us", "change's reply to last watcher told, p50 (µs)"),
    ]:
        ws, ys = med("fanout", key)
        ax.plot(ws, ys, marker="o", label=name)
        wrows.append((name, ys))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("watchers (connections with notify_job)")
    ax.set_ylabel("µs (median of runs)")
    ax.set_title("Cost of a change vs watchers (1,200 boards)")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(f"{outdir}/growth-watchers.png", dpi=100)
    print()
    print("| watchers | " + " | ".join(f"{w:,}" for w in ws) + " |")
    print("|---|" + "---|" * len(ws))
    for name, ys in wrows:
        print(f"| {name} | " + " | ".join(f"{y:.2f}" for y in ys) + " |")
