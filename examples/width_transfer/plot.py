#!/usr/bin/env python3
"""Plots and tabulates a width_transfer CSV (plotting only: the experiment itself is C++).

    python3 examples/width_transfer/plot.py docs/width_transfer/sweep.csv --out docs/width_transfer

Writes <out>/transfer.png (validation loss against learning rate, one curve per width, one panel
per optimizer; diverged runs drawn at the top edge as crosses) and <out>/head_norm.png (the output
head's RMS->inf norm at each width's optimal learning rate), and prints Markdown tables: optimal
lr per width, the shift of the optimum between two widths in octaves, and the validation-loss
penalty at the wide width of using the narrow width's optimum. Needs matplotlib.
"""
import argparse
import collections
import csv
import math
import os

LABELS = {
    "adamw": "AdamW (standard param.)",
    "adamw_1inf": "AdamW, 1̄→∞ scale (muP)",
    "muon": "Muon, sqrt(max(1,m/n))",
    "muon_mup": "Muon, spectral muP sqrt(m/n)",
    "moga_row": "MOGA-row (normalize, Adam)",
    "moga_col": "MOGA-col (normalize, Adam)",
    "moga_row_post": "MOGA-row (Adam, normalize)",
    "moga_col_post": "MOGA-col (Adam, normalize)",
    "scion": "Scion (constrained)",
}


def load(path):
    """(opt, width) -> lr -> dict(val=[...], head=[...], div=bool, ms=[...])"""
    data = collections.defaultdict(lambda: collections.defaultdict(lambda: {"val": [], "head": [], "div": False, "ms": []}))
    for r in csv.DictReader(open(path)):
        if r["optimizer"].endswith("_equal_time"):
            continue
        p = data[(r["optimizer"], int(r["width"]))][float(r["lr"])]
        p["div"] |= r["diverged"] == "1"
        p["val"].append(float(r["val_loss"]) if r["val_loss"] not in ("", "nan") else math.nan)
        p["head"].append(float(r["head_norm_rms_inf"]))
        p["ms"].append(float(r["step_ms"]))
    return data


def mean(xs):
    return sum(xs) / len(xs) if xs else math.nan


def optimum(curve):
    best = (math.nan, math.inf)
    for lr, p in curve.items():
        if not p["div"] and mean(p["val"]) < best[1]:
            best = (lr, mean(p["val"]))
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--out", default=".")
    ap.add_argument("--narrow", type=int, default=64)
    ap.add_argument("--wide", type=int, default=512)
    args = ap.parse_args()
    data = load(args.csv)
    opts = [o for o in LABELS if any(k[0] == o for k in data)]
    widths = sorted({k[1] for k in data})

    # ---- tables ----
    print(f"| optimizer | " + " | ".join(f"lr* w={w}" for w in widths) +
          f" | shift {args.narrow}->{args.wide} | penalty at {args.wide} | shift {args.narrow}->widest | penalty at widest |")
    print("|---" * (len(widths) + 5) + "|")
    for o in opts:
        cells = []
        for w in widths:
            lr, _ = optimum(data[(o, w)]) if (o, w) in data else (math.nan, math.nan)
            cells.append("" if (o, w) not in data else ("-" if math.isnan(lr) else f"2^{round(math.log2(lr))}"))

        def compare(w1):
            if (o, w1) not in data or (o, args.narrow) not in data:
                return "", ""
            lr0, _ = optimum(data[(o, args.narrow)])
            lr1, v1 = optimum(data[(o, w1)])
            shift = f"{math.log2(lr1 / lr0):+.0f}"
            p = data[(o, w1)].get(lr0)
            if p is None:
                return shift, "not on grid"
            pen = "diverged" if p["div"] else f"{100 * (mean(p['val']) - v1) / v1:.2f}%"
            return shift, pen

        widest = max(w for w in widths if (o, w) in data)
        s1, p1 = compare(args.wide)
        s2, p2 = compare(widest)
        print(f"| {o} | " + " | ".join(cells) + f" | {s1} | {p1} | {s2} (w={widest}) | {p2} |")
    print()
    print("| optimizer | " + " | ".join(f"best val w={w}" for w in widths) + " |")
    print("|---" * (len(widths) + 1) + "|")
    for o in opts:
        print(f"| {o} | " + " | ".join(
            (f"{optimum(data[(o, w)])[1]:.4f}" if (o, w) in data else "") for w in widths) + " |")
    print()
    print("| optimizer | " + " | ".join(f"head norm w={w}" for w in widths) + " | ms/step at widest |")
    print("|---" * (len(widths) + 2) + "|")
    for o in opts:
        cells = []
        for w in widths:
            if (o, w) not in data:
                cells.append("")
                continue
            lr, _ = optimum(data[(o, w)])
            cells.append("-" if math.isnan(lr) else f"{mean(data[(o, w)][lr]['head']):.1f}")
        widest = max(w for w in widths if (o, w) in data)
        ms = mean([m for p in data[(o, widest)].values() for m in p["ms"]])
        print(f"| {o} | " + " | ".join(cells) + f" | {ms:.1f} (w={widest}) |")

    # ---- figures ----
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(args.out, exist_ok=True)
    cols = 3
    rows = (len(opts) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    cmap = plt.get_cmap("viridis")
    all_best = [optimum(data[k])[1] for k in data if not math.isnan(optimum(data[k])[0])]
    ymin = min(all_best) - 0.05
    ymax = ymin + 1.2
    for ax, o in zip(axes.flat, opts):
        for i, w in enumerate(widths):
            if (o, w) not in data:
                continue
            c = data[(o, w)]
            lrs = sorted(c)
            color = cmap(i / max(1, len(widths) - 1))
            xs = [lr for lr in lrs if not c[lr]["div"]]
            ax.plot(xs, [min(mean(c[lr]["val"]), ymax) for lr in xs], "-o", ms=3, color=color, label=f"w={w}")
            dx = [lr for lr in lrs if c[lr]["div"]]
            ax.plot(dx, [ymax] * len(dx), "x", color=color)
            lr, v = optimum(c)
            if not math.isnan(lr):
                ax.plot([lr], [v], "*", ms=10, color=color, markeredgecolor="k", markeredgewidth=0.5)
        ax.set_xscale("log", base=2)
        ax.set_ylim(ymin, ymax + 0.05)
        ax.set_title(LABELS[o], fontsize=10)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("val loss (nats/byte)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(opts):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Validation loss vs learning rate across widths (stars: optimum; x: diverged)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "transfer.png"), dpi=110)

    fig, ax = plt.subplots(figsize=(6, 4))
    for o in opts:
        ws, hs = [], []
        for w in widths:
            if (o, w) in data:
                lr, _ = optimum(data[(o, w)])
                if not math.isnan(lr):
                    ws.append(w)
                    hs.append(mean(data[(o, w)][lr]["head"]))
        ax.plot(ws, hs, "-o", ms=3, label=o)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width")
    ax.set_ylabel("||head||_{RMS->inf} at the optimal lr")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "head_norm.png"), dpi=110)


if __name__ == "__main__":
    main()
