#!/usr/bin/env python3
"""Medians over several launch/scaling-bench runs: throughput per setup and the issue's target ratios.

usage: bench/median.py RUN_DIR [RUN_DIR ...]   (each holds the results.json that scaling-bench wrote)
Every ratio is taken within one run (both sides measured minutes apart on the same machine) and then the median
over runs is reported, so a noisy neighbour in one run does not decide a verdict.
"""
import json
import statistics
import sys


def load(run):
    with open(f"{run}/results.json") as handle:
        data = json.load(handle)
    ours = {(key, row["ranks"]): row for key, rows in data["scaling"].items() for row in rows}
    torch = {(row["config"], row["world_size"], row["threads_per_process"]): row["samples_per_second"]
             for row in data.get("pytorch", [])}
    return ours, torch


def main(runs):
    loaded = [load(run) for run in runs]
    rows = {}
    for ours, torch in loaded:
        for (key, ranks), row in ours.items():
            rows.setdefault(f"lockstep {key} {ranks} rank(s)", []).append(row["samples_per_second"])
        for (config, world, threads), value in torch.items():
            rows.setdefault(f"pytorch {config} {world} process(es) x {threads} thread(s)", []).append(value)
    print(f"| setup | median samples/s | runs |\n|---|---:|---|")
    for name in sorted(rows):
        values = rows[name]
        print(f"| {name} | {statistics.median(values):.0f} | {', '.join(f'{v:.0f}' for v in values)} |")

    def best_torch(config):
        # The best 1-node PyTorch configuration of this run (1×1, 1×2 threads or DDP 2×1).
        return lambda t: max(v for (c, _, _), v in t.items() if c == config)

    def limit(key):
        # FLOPs per sample × samples/s ÷ (ranks × sgemm rate at the model's GEMM shapes), from plot.py.
        return lambda o, t: o[(key, 2)]["limit_fraction"]

    targets = [
        ("fashion-cnn 2×1 / best PyTorch 1-node", 1.5, lambda o, t: o[("fashion-cnn/weak", 2)]["samples_per_second"] / best_torch("fashion-cnn")(t)),
        ("fashion-cnn-bn 2×1 / best PyTorch 1-node", 1.3, lambda o, t: o[("fashion-cnn-bn/weak", 2)]["samples_per_second"] / best_torch("fashion-cnn-bn")(t)),
        ("fashion-mlp 2×1 / PyTorch 1×2", 3.0, lambda o, t: o[("fashion-mlp/weak", 2)]["samples_per_second"] / t[("fashion-mlp", 1, 2)]),
        ("fashion-cnn 2×1 share of the sgemm limit", 0.6, limit("fashion-cnn/weak")),
        ("fashion-mlp 2×1 share of the sgemm limit", 0.7, limit("fashion-mlp/weak")),
        ("text-transformer 2×1 / best PyTorch 1-node (tokens/s)", 1.5,
         lambda o, t: o[("text-transformer/weak", 2)]["samples_per_second"] / best_torch("text-transformer")(t)),
        ("fashion-cnn-bn weak-scaling efficiency 1→2", 0.9, lambda o, t: o[("fashion-cnn-bn/weak", 2)]["efficiency"]),
        ("fashion-mlp weak-scaling efficiency 1→2", 0.9, lambda o, t: o[("fashion-mlp/weak", 2)]["efficiency"]),
        ("fashion-cnn weak-scaling efficiency 1→2", 0.9, lambda o, t: o[("fashion-cnn/weak", 2)]["efficiency"]),
    ]
    print(f"\n| target | required | median | per run | met |\n|---|---:|---:|---|---|")
    for name, required, ratio in targets:
        values = []
        for ours, torch in loaded:
            try:
                values.append(ratio(ours, torch))
            except (KeyError, ValueError, ZeroDivisionError):
                pass
        if not values:
            print(f"| {name} | {required} | n/a | | |")
            continue
        median = statistics.median(values)
        print(f"| {name} | ≥ {required:g} | {median:.2f} | {', '.join(f'{v:.2f}' for v in values)} | {'yes' if median >= required else 'no'} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
