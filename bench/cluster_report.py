"""Summarises `launch/scaling-bench --hosts` runs (cluster-CONFIG-TRANSPORT-ROUND.json) into cluster.md: medians of
samples/s, step time, communication fraction and efficiency per path, and the hierarchical / flat ratio."""
import glob
import json
import os
import statistics
import sys


def median(values):
    return statistics.median(values) if values else float("nan")


def main(out):
    meta = json.load(open(os.path.join(out, "meta.json")))
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "cluster-*.json"))):
        config, transport, _ = os.path.basename(path)[len("cluster-"):-len(".json")].rsplit("-", 2)
        runs.setdefault((config, transport), []).append(json.load(open(path)))
    lines = [f"{meta['hosts']} emulated hosts × {meta['ranks_per_host']} ranks, links {meta['link']}, {meta['date']}, "
             f"commit {meta['commit']}, {meta['machine']}, load average at start {meta['load_average_at_start']}", "",
             f"`{meta['command']}`", "",
             "| config | path | runs | samples/s (median, range) | step ms | communication | efficiency (compute / step) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    rates_by_path = {}
    for (config, transport), items in sorted(runs.items()):
        rates = [r["samples_per_second"] for r in items]
        steps = [r["step_seconds_median"] for r in items]
        waits = [r["allreduce_wait_fraction"] for r in items]
        # Compute: the step's phases other than waiting for the reduction (data, forward, backward, optimizer).
        computes = [sum(v for k, v in r["phase_seconds_median"].items() if k != "allreduce_wait") for r in items]
        efficiency = [c / s for c, s in zip(computes, steps)]
        rates_by_path[(config, transport)] = median(rates)
        name = {"mpi": "flat MPI", "deterministic_mpi": "deterministic, flat MPI",
                "deterministic_hierarchical": "deterministic, through nodes"}.get(transport, transport)
        lines.append(f"| {config} | {name} ({items[0]['reduction']}) | {len(items)} | {median(rates):.0f} "
                     f"({min(rates):.0f}–{max(rates):.0f}) | {median(steps) * 1e3:.1f} | {median(waits) * 100:.0f}% "
                     f"| {median(efficiency) * 100:.0f}% |")
    for config in sorted({c for c, _ in runs}):
        for flat, hierarchical, label in [("mpi", "hierarchical", "hierarchical / flat MPI"),
                                          ("deterministic_mpi", "deterministic_hierarchical",
                                           "deterministic through nodes / deterministic flat MPI")]:
            if (config, flat) in rates_by_path and (config, hierarchical) in rates_by_path:
                ratio = rates_by_path[(config, hierarchical)] / rates_by_path[(config, flat)]
                lines.append(f"\n{config}: {label} = **{ratio:.2f}×** samples/s (medians)")
    text = "\n".join(lines) + "\n"
    open(os.path.join(out, "cluster.md"), "w").write(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1])
