#!/usr/bin/env python3
"""Depth transfer: does the optimal learning rate stay put as hidden layers are added?

Runs the width-transfer experiment (width_transfer, the same model, data order, seeds and lr
grids) at several depths, then reports, per optimizer and width, the optimal lr at each depth,
how far it moves from the reference depth (octaves), and the validation-loss penalty at the
deepest model of using the reference depth's optimum.

    python3 examples/width_transfer/depth_transfer.py BINARY [--mode quick|full] [--out DIR]
            [--depths 1,2,4,8] [--widths 64,256] [--seeds N] [--optimizers a,b,...]
            [--reuse]   (analyse the CSVs already in DIR instead of running)

quick: 200 steps at batch 64, the quick lr grids, 2 seeds (about 10 minutes on 2 cores).
full:  1000 steps at batch 128, the full grids, 2 seeds (several hours; not run so far).
Writes DIR/depth_<d>.csv (one per depth), DIR/summary.md and DIR/depth_transfer.png.
"""
import argparse
import csv
import math
import os
import subprocess
import sys
from collections import defaultdict

REFERENCE_DEPTH = 2  # the width sweep's depth


def run(binary, mode, depth, widths, seeds, optimizers, out):
    cmd = [binary, "--mode", mode, "--depth", str(depth), "--widths", ",".join(map(str, widths)), "--seeds",
           str(seeds), "--optimizers", ",".join(optimizers), "--no-equal-time", "--out", out]
    print("running:", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def load(paths):
    curves = defaultdict(lambda: defaultdict(list))  # (opt, width, depth) -> lr -> [val or inf]
    for p in paths:
        for r in csv.DictReader(open(p)):
            key = (r["optimizer"], int(r["width"]), int(r["depth"]))
            v = float(r["val_loss"]) if r["diverged"] == "0" else math.inf
            curves[key][float(r["lr"])].append(v if math.isfinite(v) else math.inf)
    return curves


def mean(v):
    return sum(v) / len(v) if v and all(math.isfinite(x) for x in v) else math.inf


def optimum(curve):
    best = min(curve.items(), key=lambda kv: mean(kv[1]))
    return (best[0], mean(best[1])) if math.isfinite(mean(best[1])) else (math.nan, math.inf)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--mode", default="quick", choices=["quick", "full"])
    ap.add_argument("--out", default="build-demo/depth_transfer")
    ap.add_argument("--depths", default="1,2,4,8")
    ap.add_argument("--widths", default="64,256")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--optimizers", default="adamw,adamw_1inf,moga_row,muon_mup,scion")
    ap.add_argument("--reuse", action="store_true")
    a = ap.parse_args()
    depths = [int(x) for x in a.depths.split(",")]
    widths = [int(x) for x in a.widths.split(",")]
    optimizers = a.optimizers.split(",")
    os.makedirs(a.out, exist_ok=True)
    paths = [os.path.join(a.out, f"depth_{d}.csv") for d in depths]
    if not a.reuse:
        for d, p in zip(depths, paths):
            run(a.binary, a.mode, d, widths, a.seeds, optimizers, p)
    curves = load(paths)
    ref = REFERENCE_DEPTH if REFERENCE_DEPTH in depths else depths[0]
    deepest = max(depths)
    lines = [f"Optimal lr per depth ({a.mode} mode, mean validation loss over {a.seeds} seed(s)); shift = "
             f"log2(lr*(depth {deepest}) / lr*(depth {ref})) in octaves; penalty = validation loss at depth "
             f"{deepest} with depth {ref}'s optimal lr, relative to depth {deepest}'s optimum.", ""]
    for w in widths:
        lines.append(f"**w = {w}**")
        lines.append("")
        lines.append("| optimizer | " + " | ".join(f"lr* depth {d}" for d in depths) +
                     f" | shift {ref} -> {deepest} | largest shift | penalty at {deepest} | best val at each depth |")
        lines.append("|---|" + "---|" * len(depths) + "---|---|---|---|")
        for o in optimizers:
            opts = {d: optimum(curves[(o, w, d)]) for d in depths if (o, w, d) in curves}
            if ref not in opts or deepest not in opts:
                continue
            cells = [("2^%d" % round(math.log2(opts[d][0]))) if d in opts and math.isfinite(opts[d][0]) else "-"
                     for d in depths]
            lr_ref, lr_deep = opts[ref][0], opts[deepest][0]
            shift = math.log2(lr_deep / lr_ref) if math.isfinite(lr_ref) and math.isfinite(lr_deep) else math.nan
            shifts = [abs(math.log2(opts[d][0] / lr_ref)) for d in opts if math.isfinite(opts[d][0])]
            at = curves[(o, w, deepest)].get(lr_ref)
            pen = (100 * (mean(at) - opts[deepest][1]) / opts[deepest][1]) if at else math.nan
            pen_s = "diverged" if at and not math.isfinite(mean(at)) else f"{pen:.2f}%"
            best = " / ".join(f"{opts[d][1]:.4f}" for d in depths if d in opts)
            lines.append(f"| {o} | " + " | ".join(cells) + f" | {shift:+.0f} | {max(shifts):.0f} | {pen_s} | {best} |")
        lines.append("")
    text = "\n".join(lines)
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no matplotlib: no figure)", file=sys.stderr)
        return
    w = max(widths)
    fig, axes = plt.subplots(1, len(optimizers), figsize=(3.2 * len(optimizers), 3.3), sharey=True)
    for ax, o in zip(axes, optimizers):
        for d in depths:
            c = curves.get((o, w, d))
            if not c:
                continue
            pts = sorted((math.log2(lr), mean(v)) for lr, v in c.items() if math.isfinite(mean(v)))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", markersize=3, label=f"depth {d}")
        ax.set_title(o, fontsize=9)
        ax.set_xlabel("log2 lr")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"validation loss (w = {w})")
    axes[0].legend(fontsize=7)
    lo = min(optimum(c)[1] for k, c in curves.items() if k[1] == w and math.isfinite(optimum(c)[1]))
    axes[0].set_ylim(lo - 0.05, lo + 0.8)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "depth_transfer.png"), dpi=100)


if __name__ == "__main__":
    main()
