#!/usr/bin/env python3
"""Collects a `launch/scaling-bench` output directory into results.json, report.md and SVG plots.

  python3 bench/plot.py DIR

Standard library only: the SVGs are written by hand and open in any browser.
"""
import glob
import json
import math
import os
import sys

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def load(pattern):
    results = []
    for path in sorted(glob.glob(pattern)):
        try:
            with open(path) as f:
                item = json.load(f)
        except (OSError, ValueError) as error:
            print(f"plot.py: skipping {path}: {error}", file=sys.stderr)
            continue
        item["_file"] = os.path.basename(path)
        results.append(item)
    return results


def mode_of(item):
    """'weak' or 'strong' from the file name train-CONFIG-MODE-N.json."""
    parts = item["_file"].rsplit(".", 1)[0].split("-")
    return parts[-2] if len(parts) >= 3 else "?"


def scaling_rows(train):
    """Rows per (config, mode) sorted by ranks, with speedup and efficiency against the 1-rank run."""
    groups = {}
    for item in train:
        groups.setdefault((item["config"], mode_of(item)), []).append(item)
    rows = {}
    for key, items in sorted(groups.items()):
        items.sort(key=lambda i: i["world_size"])
        base = next((i for i in items if i["world_size"] == 1), None)
        out = []
        for item in items:
            n = item["world_size"]
            speedup = item["samples_per_second"] / base["samples_per_second"] if base else float("nan")
            out.append(dict(ranks=n, per_rank_batch=item["per_rank_batch"], global_batch=item["global_batch"],
                            samples_per_second=item["samples_per_second"], speedup=speedup, efficiency=speedup / n,
                            comm_fraction=item["allreduce_wait_fraction"], step_ms=item["step_seconds_median"] * 1e3,
                            gflops=item.get("achieved_gflops_per_rank", float("nan")),
                            sgemm=item.get("sgemm_gflops_per_rank", float("nan")),
                            # The limit at the model's own GEMM shapes, measured in the same run on every rank at once;
                            # %-of-limit = FLOPs per sample × samples/s ÷ (ranks × that per-rank rate).
                            sgemm_model=item.get("sgemm_model_shapes_gflops_per_rank", float("nan")),
                            limit_fraction=(item["flops_per_sample_forward"] + item["flops_per_sample_backward"])
                            * item["samples_per_second"] / 1e9 / (n * item.get("sgemm_model_shapes_gflops_per_rank", float("nan"))),
                            cpu=item.get("cpu_model", "?"), core=item.get("openblas_core", "?"),
                            blas_threads=item.get("blas_threads", "?")))
        rows[key] = out
    return rows


def fmt_bytes(b):
    for unit in ["B", "KiB", "MiB", "GiB"]:
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if b == int(b) else f"{b:.1f} {unit}"
        b /= 1024


def nice_ticks(low, high, count=5):
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    start = math.floor(low / step) * step
    ticks = []
    value = start
    # Ticks run from at or below `low` to at or above `high`, so every point is inside the plot.
    while not ticks or ticks[-1] < high - step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def escape(text):
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def line_chart(title, x_label, y_label, series, log_x=False, reference=None, y_min=0.0, x_ticks=None, x_tick_label=str):
    """series: list of (label, [(x, y)], dashed). reference: optional (label, [(x, y)]) drawn grey and dashed."""
    width, height = 760, 440
    left, right, top, bottom = 70, 200, 40, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [p for _, pts, _ in series for p in pts] + (reference[1] if reference else [])
    points = [(x, y) for x, y in points if y == y and x > 0]
    if not points:
        points = [(1, 0), (2, 1)]
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    tx = (lambda v: math.log(v, 2)) if log_x else (lambda v: v)
    x_low, x_high = tx(min(xs)), tx(max(xs))
    if x_high == x_low:
        x_high = x_low + 1
    y_ticks = nice_ticks(min(y_min, min(ys)), max(ys) * 1.05)
    y_low, y_high = y_ticks[0], y_ticks[-1]

    def px(x):
        return left + (tx(x) - x_low) / (x_high - x_low) * plot_w

    def py(y):
        return top + plot_h - (y - y_low) / (y_high - y_low) * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'font-family="Helvetica, Arial, sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left + plot_w / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{escape(title)}</text>']
    for t in y_ticks:
        y = py(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    for t in (x_ticks if x_ticks is not None else sorted(set(xs))):
        x = px(t)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#f0f0f0"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{escape(x_tick_label(t))}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 15}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text transform="translate(18,{top + plot_h / 2}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>')
    legend = []
    if reference:
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in reference[1])
        out.append(f'<polyline points="{pts}" fill="none" stroke="#999" stroke-width="1.5" stroke-dasharray="2,4"/>')
        legend.append((reference[0], "#999", "2,4"))
    for index, (label, pts, dashed) in enumerate(series):
        color = COLORS[index % len(COLORS)]
        pts = [(x, y) for x, y in pts if y == y]
        dash = "6,4" if dashed else ""
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{color}"><title>{escape(label)}: {x:g}, {y:.3g}</title></circle>')
        legend.append((label, color, dash))
    for index, (label, color, dash) in enumerate(legend):
        y = top + 10 + index * 20
        out.append(f'<line x1="{left + plot_w + 12}" y1="{y}" x2="{left + plot_w + 36}" y2="{y}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>')
        out.append(f'<text x="{left + plot_w + 42}" y="{y + 4}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: bench/plot.py DIR (a launch/scaling-bench output directory)")
    directory = sys.argv[1]
    train = load(os.path.join(directory, "train-*.json"))
    allreduce = load(os.path.join(directory, "allreduce-*.json"))
    torch = load(os.path.join(directory, "torch-*.json"))
    meta = {}
    meta_path = os.path.join(directory, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
    rows = scaling_rows(train)

    results = dict(meta=meta, train=train, allreduce=allreduce, pytorch=torch,
                   scaling={f"{c}/{m}": r for (c, m), r in rows.items()})
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)

    md = ["# Lockstep scaling benchmark", ""]
    if meta:
        md += [f"Machine: {meta.get('machine', '?')}; run {meta.get('date', '?')}; commit {meta.get('commit', '?')}.", "",
               "Command: `" + meta.get("command", "") + "`", ""]
    md += ["Strong scaling keeps the global batch fixed (per-rank batch = global / ranks); weak scaling keeps the per-rank batch fixed. "
           "samples/s is steady state (wall time of the timed steps after warm-up); speedup = samples/s over the 1-rank run of the same mode; "
           "efficiency = speedup / ranks; comm = median allreduce wait / median step (rank 0). "
           "More ranks than cores are oversubscribed and cannot scale.", ""]
    for (config, mode), items in rows.items():
        md += [f"## {config}, {mode} scaling", "",
               "| ranks | per-rank batch | global batch | samples/s | speedup | efficiency | comm | step ms | GFLOP/s per rank (sgemm 512³) "
               "| sgemm at model shapes per rank | % of limit | BLAS threads | OpenBLAS core | CPU |",
               "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for r in items:
            md.append(f"| {r['ranks']} | {r['per_rank_batch']} | {r['global_batch']} | {r['samples_per_second']:.0f} | {r['speedup']:.2f} | "
                      f"{r['efficiency'] * 100:.0f}% | {r['comm_fraction'] * 100:.1f}% | {r['step_ms']:.2f} | {r['gflops']:.1f} ({r['sgemm']:.0f}) | "
                      f"{r['sgemm_model']:.1f} | {r['limit_fraction'] * 100:.0f}% | {r['blas_threads']} | {r['core']} | {r['cpu']} |")
        md.append("")
    if allreduce:
        md += ["## Allreduce", "", "Median over trials of the slowest rank; busbw = 2(n−1)/n × bytes / time.", ""]
        header = "| bytes |" + "".join(f" {a['world_size']} ranks µs | busbw GB/s | raw MPI µs | raw busbw GB/s | shared memory µs | shm busbw GB/s |"
                                       for a in allreduce)
        md += [header, "|---:|" + "---:|---:|---:|---:|---:|---:|" * len(allreduce)]
        sizes = sorted({row["bytes"] for a in allreduce for row in a["rows"]})
        for size in sizes:
            line = f"| {fmt_bytes(size)} |"
            for a in allreduce:
                row = next((r for r in a["rows"] if r["bytes"] == size), None)
                if row is None:
                    line += " | | | | | |"
                    continue
                raw, shm = row.get("raw_seconds"), row.get("shared_memory_seconds")
                line += (f" {row['communicator_seconds'] * 1e6:.2f} | {row['communicator_busbw'] / 1e9:.3f} |"
                         + (f" {raw * 1e6:.2f} | {row['raw_busbw'] / 1e9:.3f} |" if raw is not None else " – | – |")
                         + (f" {shm * 1e6:.2f} | {row['shared_memory_busbw'] / 1e9:.3f} |" if shm is not None else " – | – |"))
            md.append(line)
        md.append("")
    if torch:
        md += ["## PyTorch reference (same models, batch, SGD momentum, Fashion-MNIST)", "",
               "| config | processes × threads | per-process batch | samples/s | torch |", "|---|---:|---:|---:|---|"]
        for t in sorted(torch, key=lambda t: (t["config"], t["world_size"], t["threads_per_process"])):
            md.append(f"| {t['config']} | {t['world_size']} × {t['threads_per_process']} | {t['per_rank_batch']} | "
                      f"{t['samples_per_second']:.0f} | {t['torch_version']} |")
        md.append("")
        # The ratio: Lockstep's best weak-scaling run (same per-process batch) over the best PyTorch run.
        md += ["## Lockstep against the best PyTorch configuration (this run)", "",
               "| config | Lockstep samples/s (ranks) | best PyTorch samples/s (processes × threads) | ratio |", "|---|---:|---:|---:|"]
        for (config, mode), items in rows.items():
            references = [t for t in torch if t["config"] == config]
            if mode != "weak" or not items or not references:
                continue
            ours = max(items, key=lambda r: r["samples_per_second"])
            best = max(references, key=lambda t: t["samples_per_second"])
            md.append(f"| {config} | {ours['samples_per_second']:.0f} ({ours['ranks']}) | {best['samples_per_second']:.0f} "
                      f"({best['world_size']} × {best['threads_per_process']}) | {ours['samples_per_second'] / best['samples_per_second']:.2f} |")
        md.append("")
    projection = os.path.join(directory, "projection.md")
    if os.path.exists(projection):
        with open(projection) as f:
            md += ["## Projection", "", f.read()]
    md += ["## Plots", "", "![speedup](speedup.svg) ![efficiency](efficiency.svg) ![busbw](busbw.svg)", ""]
    with open(os.path.join(directory, "report.md"), "w") as f:
        f.write("\n".join(md))

    rank_counts = sorted({r["ranks"] for items in rows.values() for r in items}) or [1]
    speed_series = [(f"{c} {m}", [(r["ranks"], r["speedup"]) for r in items], m == "strong") for (c, m), items in rows.items()]
    with open(os.path.join(directory, "speedup.svg"), "w") as f:
        f.write(line_chart("Speedup vs ranks", "ranks", "speedup (samples/s ÷ 1 rank)", speed_series,
                           reference=("ideal", [(n, n) for n in rank_counts]), log_x=True, x_ticks=rank_counts))
    eff_series = [(f"{c} {m}", [(r["ranks"], r["efficiency"] * 100) for r in items], m == "strong") for (c, m), items in rows.items()]
    with open(os.path.join(directory, "efficiency.svg"), "w") as f:
        f.write(line_chart("Parallel efficiency vs ranks", "ranks", "efficiency (%)", eff_series,
                           reference=("ideal", [(n, 100) for n in rank_counts]), log_x=True, x_ticks=rank_counts))
    bw_series = []
    for a in allreduce:
        n = a["world_size"]
        bw_series.append((f"{n} ranks, Communicator", [(r["bytes"], r["communicator_busbw"] / 1e9) for r in a["rows"]], False))
        if any("raw_busbw" in r for r in a["rows"]):
            bw_series.append((f"{n} ranks, raw MPI", [(r["bytes"], r["raw_busbw"] / 1e9) for r in a["rows"] if "raw_busbw" in r], True))
        if any("shared_memory_busbw" in r for r in a["rows"]):
            bw_series.append((f"{n} ranks, shared memory", [(r["bytes"], r["shared_memory_busbw"] / 1e9) for r in a["rows"]
                                                                     if "shared_memory_busbw" in r], False))
    sizes = sorted({r["bytes"] for a in allreduce for r in a["rows"]})
    ticks = [s for i, s in enumerate(sizes) if i % 2 == 0] if len(sizes) > 8 else sizes
    with open(os.path.join(directory, "busbw.svg"), "w") as f:
        f.write(line_chart("Allreduce bus bandwidth vs message size", "message size", "busbw (GB/s)", bw_series,
                           log_x=True, x_ticks=ticks, x_tick_label=fmt_bytes))
    print(f"plot.py: wrote {directory}/results.json, report.md, speedup.svg, efficiency.svg, busbw.svg")


if __name__ == "__main__":
    main()
