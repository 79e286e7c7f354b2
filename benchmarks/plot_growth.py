#!/usr/bin/env python3
"""Plots (PNG) and Markdown tables from growth.sh's result lines: medians of the cost per
operation against machine size (core, replay), jobs queued (queue) and watchers (fanout).
Usage: plot_growth.py RESULTS OUTDIR"""
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The key each workload's lines are grouped by (the x axis).
X_KEY = {"queue": "queued", "fanout": "watchers"}

results, outdir = sys.argv[1], sys.argv[2]
runs = defaultdict(lambda: defaultdict(list))  # workload -> x -> [line dicts]
for line in open(results):
    if line.startswith("#") or "=" not in line:
        continue
    kv = dict(f.split("=", 1) for f in line.split())
    if kv["workload"] == "replay":
        kv["us_per_event"] = str(1e6 / float(kv["events_per_s"]))
    x = kv.get(X_KEY.get(kv["workload"], "boards"), kv["label"])
    runs[kv["workload"]][int(x)].append(kv)


def med(workload, key):
    xs = sorted(runs[workload])
    return xs, [statistics.median(float(r[key]) for r in runs[workload][x]) for x in xs]


def plot(series, xlabel, title, png, column, log=False, linear_ref=None):
    """One figure of `series` ((workload, key, name) each), saved as `png`, and its table
    printed with one column per x (`column` formats the header)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    rows, xs = [], []
    for workload, key, name in series:
        xs, ys = med(workload, key)
        ax.plot(xs, ys, marker="o", label=name)
        rows.append((name, ys))
    if linear_ref is not None:
        name, ys = rows[linear_ref]
        ax.plot(xs, [ys[0] * x / xs[0] for x in xs], "k:", label=f"linear from {xs[0]:,} ({name})")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("µs (median of runs)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(f"{outdir}/{png}", dpi=100)
    print()
    print("| operation | " + " | ".join(column(x) for x in xs) + " |")
    print("|---|" + "---|" * len(xs))
    for name, ys in rows:
        print(f"| {name} | " + " | ".join(f"{y:.2f}" for y in ys) + " |")


plot(
    [
        ("core", "create_mean_us", "create_job (µs)"),
        ("core", "destroy_mean_us", "destroy_job (µs)"),
        ("core", "pair_mean_us", "create + destroy (µs)"),
        ("replay", "us_per_event", "replay per event (µs)"),
    ],
    "boards in the machine",
    "Cost per operation vs machine size",
    "growth-machine-size.png",
    lambda x: f"{x:,} boards",
    linear_ref=2,
)
plot(
    [
        ("queue", "create_destroy_us", "create + destroy of one more job (µs)"),
        ("queue", "keepalive_us", "keepalive of a queued job (µs)"),
        ("queue", "tick_us", "tick (µs)"),
        ("queue", "drain_us_per_job", "allocating a queued job when the machine frees (µs/job)"),
    ],
    "jobs queued",
    "Cost per operation vs queue length (1,200 boards)",
    "growth-queue.png",
    lambda x: f"{x:,} queued",
    log=True,
)
if runs["fanout"]:
    plot(
        [
            ("fanout", "server_cpu_us_per_line", "server CPU per notification line (µs)"),
            ("fanout", "reach_all_p50_us", "change sent to last watcher told, p50 (µs)"),
            ("fanout", "after_reply_p50_us", "change's reply to last watcher told, p50 (µs)"),
        ],
        "watchers (connections with notify_job)",
        "Cost of a change vs watchers (1,200 boards)",
        "growth-watchers.png",
        lambda x: f"{x:,} watchers",
        log=True,
    )
