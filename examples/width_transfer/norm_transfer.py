#!/usr/bin/env python3
"""Analysis of a norm_transfer sweep: optimal (lr*, B*) per rule, width and token budget D, the
output head's norm there, whether that norm is shared across budgets and widths (necessary) and
whether reaching it is enough (sufficient), and the fitted exponents lr* ~ D^a, B* ~ D^b.

    python3 norm_transfer.py runs.csv trace.csv --out DIR

Writes DIR/summary.md (the tables of docs/NORM_TRANSFER.md) and, with matplotlib,
DIR/grid.png (loss over (lr, B) per budget with head-norm contours), DIR/trace.png (head norm
along training at the optimum) and DIR/scaling.png (lr* and B* against D with the fits).
Needs numpy (matplotlib for the figures).
"""
import argparse
import csv
import math
import os
import sys
from collections import defaultdict

import numpy as np

NORM_BAND = 0.10  # "same norm": within +-10% of the optimum's head norm


def load(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def cells(runs):
    """(rule, w, D) -> {(log2 B, log2 lr): dict(val=[...], head=[...], geom=[...], div=bool)}."""
    out = defaultdict(dict)
    for r in runs:
        key = (r["rule"], int(r["width"]), int(r["budget_log2"]))
        k = (round(math.log2(int(r["batch"]))), round(math.log2(float(r["lr"]))))
        c = out[key].setdefault(k, dict(val={}, head={}, geom={}, div=False))
        s = int(r["seed"])
        c["val"][s] = float(r["val_loss"])
        c["head"][s] = float(r["head_rms_inf"])
        c["geom"][s] = float(r["head_geometry"])
        c["div"] = c["div"] or r["diverged"] == "1" or not math.isfinite(float(r["val_loss"]))
    return out


def grid_optimum(cell, seed=None):
    """The (log2 B, log2 lr) with the lowest validation loss (mean over seeds, or one seed)."""
    best, bk = math.inf, None
    for k, c in cell.items():
        if c["div"]:
            continue
        v = np.mean(list(c["val"].values())) if seed is None else c["val"].get(seed, math.inf)
        if v < best:
            best, bk = v, k
    return bk, best


def refine(cell, k0, seed=None):
    """Sub-grid optimum: a quadratic in (log2 B, log2 lr) fitted to the non-diverged points of the
    3 x 3 neighbourhood of the grid optimum; its minimum when the fit is convex and the minimum
    lies within one grid step, else the grid point."""
    pts = []
    for (b, e), c in cell.items():
        if c["div"] or abs(b - k0[0]) > 1 or abs(e - k0[1]) > 1:
            continue
        v = np.mean(list(c["val"].values())) if seed is None else c["val"].get(seed)
        if v is not None:
            pts.append((b - k0[0], e - k0[1], v))
    if len(pts) < 6:
        return float(k0[0]), float(k0[1]), False
    P = np.array(pts)
    x, y, z = P[:, 0], P[:, 1], P[:, 2]
    A = np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], 1)
    coef, *_ = np.linalg.lstsq(A, z, rcond=None)
    H = np.array([[2 * coef[3], coef[5]], [coef[5], 2 * coef[4]]])
    if np.linalg.matrix_rank(A) < 6 or np.any(np.linalg.eigvalsh(H) <= 0):
        # Not convex in both directions: refine each axis alone where its curvature is positive.
        bx = -coef[1] / (2 * coef[3]) if coef[3] > 0 else 0.0
        by = -coef[2] / (2 * coef[4]) if coef[4] > 0 else 0.0
    else:
        bx, by = np.linalg.solve(H, -coef[1:3])
    if abs(bx) > 1 or abs(by) > 1:
        return float(k0[0]), float(k0[1]), False
    return k0[0] + float(bx), k0[1] + float(by), True


def edges(cell, k):
    bs = sorted({b for b, _ in cell})
    es = sorted({e for _, e in cell if _ is not None})
    flags = []
    if k[0] in (bs[0], bs[-1]):
        flags.append("B at grid edge")
    row = sorted(e for b, e in cell if b == k[0])
    if k[1] in (row[0], row[-1]):
        flags.append("lr at grid edge")
    return flags


def fit_line(x, y):
    """Least squares y = a + s x; returns (s, standard error of s, a)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        return float("nan"), float("nan"), float("nan")
    A = np.stack([np.ones_like(x), x], 1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    if len(x) < 3:
        return coef[1], float("nan"), coef[0]
    resid = y - A @ coef
    s2 = resid @ resid / (len(x) - 2)
    cov = s2 * np.linalg.inv(A.T @ A)
    return coef[1], math.sqrt(cov[1, 1]), coef[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("trace")
    ap.add_argument("--out", default=".")
    ap.add_argument("--no-figures", action="store_true", help="tables only")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    runs, trace = load(a.runs), load(a.trace)
    C = cells(runs)
    rules = list(dict.fromkeys(r["rule"] for r in runs))
    widths = sorted({int(r["width"]) for r in runs})
    budgets = sorted({int(r["budget_log2"]) for r in runs})
    seeds = sorted({int(r["seed"]) for r in runs})
    geom_name = {r["rule"]: r["head_geometry_name"] for r in runs}

    md = []
    md.append(f"Runs: {len(runs)}; rules {', '.join(rules)}; widths {widths}; budgets D = "
              + ", ".join(f"2^{d}" for d in budgets) + f" training predictions; seeds {seeds}.\n")
    # ---- optima and head norms ----
    md.append("### Optimum per rule, width and budget\n")
    md.append("Grid optimum on the mean validation loss over seeds; `lr*` and `B*` fitted are the "
              "minimum of a quadratic through its 3 x 3 neighbourhood (log2 units). Head norms are "
              "the optimum run's, mean over seeds, at the end of training.\n")
    md.append("| rule | w | D | lr* (grid) | B* (grid) | log2 lr* fit | log2 B* fit | val | head RMS->inf | head, own geometry | note |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|")
    opt = {}
    for rule in rules:
        for w in widths:
            for d in budgets:
                cell = C.get((rule, w, d))
                if not cell:
                    continue
                k, v = grid_optimum(cell)
                if k is None:
                    md.append(f"| {rule} | {w} | 2^{d} | all diverged | | | | | | | |")
                    continue
                fb, fe, ok = refine(cell, k)
                head = np.mean(list(cell[k]["head"].values()))
                geom = np.mean(list(cell[k]["geom"].values()))
                per_seed = []
                for s in seeds:
                    ks, _ = grid_optimum(cell, s)
                    if ks is not None:
                        per_seed.append(refine(cell, ks, s)[:2])
                opt[(rule, w, d)] = dict(k=k, v=v, fb=fb, fe=fe, head=head, geom=geom, per_seed=per_seed,
                                         vals=list(cell[k]["val"].values()))
                note = "; ".join(edges(cell, k) + ([] if ok else ["no convex fit: grid point"]))
                md.append(f"| {rule} | {w} | 2^{d} | 2^{k[1]} | {2 ** k[0]} | {fe:+.2f} | {fb:.2f} | {v:.4f} | "
                          f"{head:.2f} | {geom:.4g} | {note} |")
    spreads = [max(o_["vals"]) - min(o_["vals"]) for o_ in opt.values() if len(o_["vals"]) > 1]
    if spreads:
        md.append(f"\nSeed noise: at the optima the seeds' validation losses differ by {np.median(spreads):.4f} "
                  f"nats (median; max {max(spreads):.4f}).")
    md.append("")

    # ---- necessary: same norm across budgets and widths? ----
    md.append("### Is the head norm at the optimum the same across budgets and widths?\n")
    md.append("Spread = max / min of the optimum's head norm over every (width, budget) of the rule.\n")
    md.append("| rule | head geometry | RMS->inf at the optimum, per (w, D) | spread RMS->inf | own geometry, per (w, D) | spread own |")
    md.append("|---|---|---|---|---|---|")
    for rule in rules:
        hs = [(w, d, opt[(rule, w, d)]) for w in widths for d in budgets if (rule, w, d) in opt]
        if not hs:
            continue
        h = [o["head"] for _, _, o in hs]
        g = [o["geom"] for _, _, o in hs]
        md.append(f"| {rule} | {geom_name[rule]} | " + ", ".join(f"{o['head']:.1f}" for _, _, o in hs)
                  + f" | {max(h) / min(h):.2f} | " + ", ".join(f"{o['geom']:.3g}" for _, _, o in hs)
                  + f" | {max(g) / min(g):.2f} |")
    md.append("\n(Order of the lists: " + ", ".join(f"w={w} D=2^{d}" for w in widths for d in budgets) + ".)\n")

    # ---- sufficient? ----
    md.append(f"### Is the norm sufficient? Runs whose head norm is within {NORM_BAND:.0%} of the optimum's\n")
    md.append("Per (rule, w, D): how many other (lr, B) cells end with the optimum's head RMS->inf norm "
              "(within the band), and their extra validation loss over the optimum.\n")
    md.append("| rule | w | D | same-norm cells | their extra loss: min | median | max |")
    md.append("|---|---|---|---|---|---|---|")
    for rule in rules:
        for w in widths:
            for d in budgets:
                if (rule, w, d) not in opt:
                    continue
                o, cell = opt[(rule, w, d)], C[(rule, w, d)]
                ex = []
                for k, c in cell.items():
                    if k == o["k"] or c["div"]:
                        continue
                    h = np.mean(list(c["head"].values()))
                    if abs(h / o["head"] - 1) <= NORM_BAND:
                        ex.append(100 * (np.mean(list(c["val"].values())) - o["v"]) / o["v"])
                if ex:
                    md.append(f"| {rule} | {w} | 2^{d} | {len(ex)} | {min(ex):.2f}% | {np.median(ex):.2f}% | {max(ex):.2f}% |")
                else:
                    md.append(f"| {rule} | {w} | 2^{d} | 0 | | | |")
    md.append("")

    # ---- what sets the norm: the step budget lr * D / B? ----
    md.append("### What sets the final head norm: the summed step size lr x steps = lr D / B?\n")
    md.append("Per rule, over every non-diverged run: least squares of log2(head RMS->inf) on "
              "log2(lr D / B), its slope, and the share of the variance it explains (R^2). A "
              "sign-type update moves every head entry by a fixed amount per step, so an unconstrained "
              "rule's norm should follow lr D / B; a constraint caps it.\n")
    md.append("| rule | slope | R^2 | runs |")
    md.append("|---|---|---|---|")
    for rule in rules:
        xs, ys = [], []
        for r in runs:
            if r["rule"] != rule or r["diverged"] == "1":
                continue
            h = float(r["head_rms_inf"])
            if h > 0 and math.isfinite(h):
                xs.append(math.log2(float(r["lr"]) * 2 ** int(r["budget_log2"]) / int(r["batch"])))
                ys.append(math.log2(h))
        if len(xs) >= 3:
            slope, _, icpt = fit_line(xs, ys)
            pred = icpt + slope * np.asarray(xs)
            ss = np.sum((np.asarray(ys) - pred) ** 2)
            st = np.sum((np.asarray(ys) - np.mean(ys)) ** 2)
            md.append(f"| {rule} | {slope:+.2f} | {1 - ss / st if st > 0 else float('nan'):.2f} | {len(xs)} |")
    md.append("")

    # ---- exponents ----
    md.append("### How lr* and B* scale with the budget: lr* ~ D^a, B* ~ D^b\n")
    md.append("Least squares on the fitted optima (log2 lr*, log2 B* against log2 D), with the standard "
              "error of the slope; per seed: the same fit on each seed's own optima.\n")
    md.append("| rule | w | a (lr*) | +- | b (B*) | +- | a per seed | b per seed |")
    md.append("|---|---|---|---|---|---|---|---|")
    fits = {}
    for rule in rules:
        for w in widths:
            ds = [d for d in budgets if (rule, w, d) in opt]
            if len(ds) < 2:
                continue
            ae, se_a, ca = fit_line(ds, [opt[(rule, w, d)]["fe"] for d in ds])
            be, se_b, cb = fit_line(ds, [opt[(rule, w, d)]["fb"] for d in ds])
            fits[(rule, w)] = (ae, ca, be, cb)
            ps_a, ps_b = [], []
            for i in range(len(seeds)):
                try:
                    ps_a.append(fit_line(ds, [opt[(rule, w, d)]["per_seed"][i][1] for d in ds])[0])
                    ps_b.append(fit_line(ds, [opt[(rule, w, d)]["per_seed"][i][0] for d in ds])[0])
                except IndexError:
                    pass
            md.append(f"| {rule} | {w} | {ae:+.2f} | {se_a:.2f} | {be:+.2f} | {se_b:.2f} | "
                      + ", ".join(f"{x:+.2f}" for x in ps_a) + " | " + ", ".join(f"{x:+.2f}" for x in ps_b) + " |")
    md.append("")
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    if a.no_figures:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no matplotlib: figures not drawn)", file=sys.stderr)
        return
    w_fig = widths[-1]
    # Grid: one row per rule, one column per budget, loss relative to the cell's optimum.
    fig, axes = plt.subplots(len(rules), len(budgets), figsize=(3.6 * len(budgets), 3.0 * len(rules)), squeeze=False)
    for i, rule in enumerate(rules):
        for j, d in enumerate(budgets):
            ax = axes[i][j]
            cell = C.get((rule, w_fig, d), {})
            if not cell or (rule, w_fig, d) not in opt:
                ax.set_axis_off()
                continue
            bs = sorted({b for b, _ in cell})
            es = sorted({e for _, e in cell})
            Z = np.full((len(es), len(bs)), np.nan)
            N = np.full((len(es), len(bs)), np.nan)
            for (b, e), c in cell.items():
                if not c["div"]:
                    Z[es.index(e), bs.index(b)] = 100 * (np.mean(list(c["val"].values())) / opt[(rule, w_fig, d)]["v"] - 1)
                    N[es.index(e), bs.index(b)] = np.mean(list(c["head"].values()))
            im = ax.imshow(np.minimum(Z, 10), origin="lower", aspect="auto", cmap="viridis_r",
                           extent=(bs[0] - .5, bs[-1] + .5, es[0] - .5, es[-1] + .5))
            hv = opt[(rule, w_fig, d)]["head"]
            if np.isfinite(N).sum() >= 4:
                ax.contour(bs, es, N, levels=[hv * (1 - NORM_BAND), hv, hv * (1 + NORM_BAND)],
                           colors=["w", "r", "w"], linewidths=[0.8, 1.5, 0.8])
            o = opt[(rule, w_fig, d)]
            ax.plot([o["fb"]], [o["fe"]], "r*", ms=10)
            ax.set_title(f"{rule}, D=2^{d}", fontsize=9)
            ax.set_xlabel("log2 B")
            ax.set_ylabel("log2 lr")
            fig.colorbar(im, ax=ax, label="% above optimum (capped 10)")
    fig.suptitle(f"w={w_fig}: validation loss over (lr, B); red line: the optimum's head norm, white: +-{NORM_BAND:.0%}")
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "grid.png"), dpi=90)
    plt.close(fig)

    # Trace: head norm along training for each optimum (seed 0).
    fig, axes = plt.subplots(1, len(rules), figsize=(4.2 * len(rules), 3.4), squeeze=False)
    tr = defaultdict(list)
    for t in trace:
        tr[(t["rule"], int(t["width"]), int(t["budget_log2"]), int(t["batch"]),
            round(math.log2(float(t["lr"]))), int(t["seed"]))].append(
            (int(t["tokens"]), float(t["head_rms_inf"])))
    for i, rule in enumerate(rules):
        ax = axes[0][i]
        for w in widths:
            for d in budgets:
                if (rule, w, d) not in opt:
                    continue
                k = opt[(rule, w, d)]["k"]
                pts = sorted(tr.get((rule, w, d, 2 ** k[0], k[1], seeds[0]), []))
                if pts:
                    ax.plot([p[0] / 2 ** d for p in pts], [p[1] for p in pts], marker=".",
                            ls="-" if w == widths[-1] else "--", label=f"w={w} D=2^{d}")
        ax.set_title(rule, fontsize=10)
        ax.set_xlabel("fraction of the budget")
        ax.set_ylabel("head RMS->inf norm")
        ax.set_yscale("log")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "trace.png"), dpi=90)
    plt.close(fig)

    # Scaling: lr* and B* against D.
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for rule in rules:
        for w in widths:
            ds = [d for d in budgets if (rule, w, d) in opt]
            if not ds:
                continue
            ls = "-" if w == widths[-1] else "--"
            l, = axes[0].plot(ds, [opt[(rule, w, d)]["fe"] for d in ds], "o" + ls, label=f"{rule} w={w}")
            axes[1].plot(ds, [opt[(rule, w, d)]["fb"] for d in ds], "o" + ls, color=l.get_color())
    axes[0].set_xlabel("log2 D")
    axes[0].set_ylabel("log2 lr* (fitted)")
    axes[1].set_xlabel("log2 D")
    axes[1].set_ylabel("log2 B* (fitted)")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "scaling.png"), dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
