#!/usr/bin/env python3
"""Tables (Markdown) and figures of a transformer study's runs.jsonl (study.py).

    python examples/transformer_study/analyze.py build-study/runs.jsonl [--figures DIR] [--target 2.3]

Tables: the optimal lr per rule and width and its shift from the narrowest to the widest width in
octaves, with the loss penalty at the widest width of using the narrowest width's optimum and the
seeds' spread; tokens to a target validation loss and the loss at equal steps and at equal
recorded time, at each rule's optimum at the widest width (the target: AdamW's final loss there,
unless --target); the depth sweep's optima per depth and
branch scaling, with the penalty at the deepest of the shallowest optimum; the smoothness logs
(the largest spectral norm of a hidden matrix's update per width, with the exponent of its growth
in width); the smoothness probe (the loss's curvature along each geometry's steepest direction,
per width, at initialization and at the end of each rule's run, with its exponent in width).
Figures (with matplotlib): loss against lr per width per rule, loss against tokens, loss against
lr per depth and branch scaling, the smoothness probe against width.
"""
import argparse
import collections
import json
import math
import os
import statistics


def final(r):
    return r["val"][-1][1] if r["val"] and not r["diverged"] else math.inf


def by(runs, *keys):
    out = collections.defaultdict(list)
    for r in runs:
        out[tuple(r[k] for k in keys)].append(r)
    return out


def optimum(group):
    """(best lr, mean final loss there, spread over seeds there, {lr: mean}) of one curve's runs."""
    per_lr = {lr: [final(r) for r in rs] for (lr,), rs in by(group, "lr").items()}
    mean = {lr: statistics.fmean(v) if all(math.isfinite(x) for x in v) else math.inf for lr, v in per_lr.items()}
    best = min(mean, key=mean.get)
    vals = per_lr[best]
    return best, mean[best], (max(vals) - min(vals)) if len(vals) > 1 else math.nan, mean


def cell(opt):
    """An optimum as a table cell: lr (mean loss), starred when it is the grid's end."""
    lrs = [lr for lr, v in opt[3].items()]
    edge = opt[0] in (min(lrs), max(lrs)) and len(lrs) > 2
    return "%.3g%s (%s)" % (opt[0], "*" if edge else "", fmt(opt[1]))


def fmt(x, digits=3):
    if math.isnan(x):
        return "n/a"
    return "diverged" if not math.isfinite(x) else ("%.*f" % (digits, x))


def slope(xs, ys):
    """The least-squares slope of ys against xs (nan with fewer than two points)."""
    if len(xs) < 2:
        return math.nan
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def width_tables(runs):
    runs = [r for r in runs if r["sweep"] == "width"]
    widths = sorted({r["width"] for r in runs})
    if not widths:
        return {}, widths
    rules = list(dict.fromkeys(r["rule"] for r in runs))
    print("### Optimal learning rate per width (width sweep, depth %s; * at the grid's end)\n"
          % sorted({r["depth"] for r in runs}))
    print("| rule | " + " | ".join("w=%d" % w for w in widths) + " | shift %d->%d (octaves) | penalty at %d | seeds' spread |"
          % (widths[0], widths[-1], widths[-1]))
    print("|---" * (len(widths) + 4) + "|")
    result = {}
    for rule in rules:
        cells, opt = [], {}
        for w in widths:
            group = [r for r in runs if r["rule"] == rule and r["width"] == w]
            if not group:
                cells.append("-")
                continue
            opt[w] = optimum(group)
            cells.append(cell(opt[w]))
        if widths[0] in opt and widths[-1] in opt:
            shift = math.log2(opt[widths[-1]][0] / opt[widths[0]][0])
            wide = opt[widths[-1]]
            penalty = wide[3].get(opt[widths[0]][0], math.inf) - wide[1]
            spread = max((o[2] for o in opt.values()), key=lambda x: -1 if math.isnan(x) else x)
            print("| %s | %s | %+.0f | %s | %s |" % (rule, " | ".join(cells), shift, fmt(penalty), fmt(spread)))
        result[rule] = opt
    print()
    return result, widths


def speed_tables(runs, optima, widths, target):
    if not widths:
        return
    wide = widths[-1]
    best = {}
    for rule, opt in optima.items():
        if wide not in opt:
            continue
        lr = opt[wide][0]
        best[rule] = [r for r in runs if r["sweep"] == "width" and r["rule"] == rule and r["width"] == wide
                      and r["lr"] == lr and not r["diverged"]]
    if target is None:  # AdamW's final loss at its optimum (the baseline), else what every run reaches
        if best.get("adamw"):
            target = statistics.fmean(final(r) for r in best["adamw"])
        else:
            lows = [min(v for _, v, _ in r["val"]) for rs in best.values() for r in rs]
            target = max(lows) if lows else math.nan
    print("### Width %d, each rule at its optimal lr: tokens to validation loss %.3f, loss at equal steps and time\n"
          % (wide, target))
    print("| rule | tokens to target | final loss (equal steps) | ms / step (fwd+bwd, optimizer) | loss at equal time |")
    print("|---|---|---|---|---|")
    # Time is each configuration's typical step cost (the median over all its runs, any lr or
    # seed, of each run's median forward+backward and optimizer times) times the steps taken, so a
    # run slowed by a busy machine does not change the comparison.
    cost = {}
    for (rule, width, depth), rs in by([r for r in runs if r["fwd_bwd_ms"] is not None], "rule", "width", "depth").items():
        cost[(rule, width, depth)] = statistics.median(r["fwd_bwd_ms"] for r in rs) + statistics.median(
            r["opt_ms"] for r in rs)
    budget = min(r["steps"] * cost[(r["rule"], r["width"], r["depth"])] for rs in best.values() for r in rs) if best else 0
    for rule, rs in best.items():
        if not rs:
            continue
        # the seeds' mean validation curve (same evaluation steps), read where it first reaches the
        # target, interpolated linearly between evaluations
        steps = [s for s, _, _ in rs[0]["val"]]
        curve = [statistics.fmean(r["val"][i][1] for r in rs if len(r["val"]) > i) for i in range(len(steps))]
        tok = math.inf
        for i, v in enumerate(curve):
            if v <= target + 1e-9:
                at = steps[i]
                if i:
                    s0, v0 = steps[i - 1], curve[i - 1]
                    at = s0 + (steps[i] - s0) * (v0 - target) / (v0 - v)
                tok = at * rs[0]["tokens_per_step"]
                break
        per_step = cost[(rule, wide, rs[0]["depth"])]
        at_time = [([v for s, v, _ in r["val"] if s * per_step <= budget + 1e-9] or [math.nan])[-1] for r in rs]
        fb = statistics.median(r["fwd_bwd_ms"] for r in rs)
        om = statistics.median(r["opt_ms"] for r in rs)
        print("| %s | %s | %s | %.1f, %.2f | %s |" % (rule, "not reached" if not math.isfinite(tok) else "%.0f" % tok,
                                                      fmt(statistics.fmean(final(r) for r in rs)), fb, om,
                                                      fmt(statistics.fmean(at_time))))
    print("\n(equal time: the shortest of these runs' time at its configuration's median step cost, %.1f s; each "
          "run's loss at its last evaluation within it)\n" % (budget / 1e3))


def depth_tables(runs):
    runs = [r for r in runs if r["sweep"] == "depth"]
    if not runs:
        return
    depths = sorted({r["depth"] for r in runs})
    print("### Depth sweep (width %s): optimal lr per depth and branch scaling (* at the grid's end)\n"
          % sorted({r["width"] for r in runs}))
    print("| rule | block matrices' lr | " + " | ".join("L=%d" % d for d in depths)
          + " | shift %d->%d (octaves) | penalty at L=%d | seeds' spread |" % (depths[0], depths[-1], depths[-1]))
    print("|---" * (len(depths) + 5) + "|")
    result = {}
    for (rule, scale), group in by(runs, "rule", "block_scale_name").items():
        cells, opt = [], {}
        for d in depths:
            g = [r for r in group if r["depth"] == d]
            if d == 1:  # every branch scale is 1 at one block: the "none" runs are the runs
                g = [r for r in runs if r["rule"] == rule and r["depth"] == 1 and r["block_scale_name"] == "none"]
            if not g:
                cells.append("-")
                continue
            opt[d] = optimum(g)
            cells.append(cell(opt[d]))
        shift = penalty = math.nan
        if depths[0] in opt and depths[-1] in opt:
            shift = math.log2(opt[depths[-1]][0] / opt[depths[0]][0])
            deep = opt[depths[-1]]
            penalty = deep[3].get(opt[depths[0]][0], math.inf) - deep[1]
        spread = max((o[2] for o in opt.values()), key=lambda x: -1 if math.isnan(x) else x) if opt else math.nan
        print("| %s | %s | %s | %s | %s | %s |" % (rule, scale, " | ".join(cells),
                                                  "n/a" if math.isnan(shift) else "%+.1f" % shift, fmt(penalty),
                                                  fmt(spread)))
        result[(rule, scale)] = opt
    print()
    return result


def smoothness_tables(runs, optima, widths):
    if not widths:
        return
    print("### Smoothness along training (width sweep, each rule at each width's optimal lr)\n")
    print("Largest spectral norm of one step's update of a hidden matrix, at the middle and last logged steps; the "
          "exponent is the slope of log(norm) against log(width).\n")
    print("| rule | " + " | ".join("w=%d" % w for w in widths) + " | exponent |")
    print("|---" * (len(widths) + 2) + "|")
    for rule, opt in optima.items():
        xs, ys, cells = [], [], []
        for w in widths:
            if w not in opt:
                cells.append("-")
                continue
            rs = [r for r in runs if r["sweep"] == "width" and r["rule"] == rule and r["width"] == w
                  and r["lr"] == opt[w][0] and r["norms"]]
            vals = [max(n["update_spectral"].values()) for r in rs for n in r["norms"][1:]]
            if not vals:
                cells.append("-")
                continue
            m = max(vals)
            cells.append("%.3g" % m)
            xs.append(math.log(w))
            ys.append(math.log(m))
        print("| %s | %s | %s |" % (rule, " | ".join(cells), fmt(slope(xs, ys), 2)))
    print()


GEOMETRY_NAMES = {"spectral_exact": "2̄->2̄", "row": "2̄->inf", "col": "1̄->2̄", "sign": "1̄->inf"}
GEOMETRY_TITLES = {"spectral_exact": r"$\bar 2\to\bar 2$ (Muon's)", "row": r"$\bar 2\to\infty$ (MOGA-row's)",
                   "col": r"$\bar 1\to\bar 2$ (MOGA-col's)", "sign": r"$\bar 1\to\infty$ (rescaled AdamW's)"}


def probe_curves(runs):
    """{weights: {geometry: {width: mean L over seeds}}} from the smoothness sweep's runs, where
    weights is "init" (step 0, every run) or a rule (the largest of its probes along training:
    the estimate closest to a smoothness constant along the trajectory)."""
    out = collections.defaultdict(lambda: collections.defaultdict(lambda: collections.defaultdict(list)))
    for r in runs:
        if r["sweep"] != "smoothness" or r["diverged"] or not r.get("smoothness"):
            continue
        for geo in GEOMETRY_NAMES:
            if geo in r["smoothness"][0]:
                out["init"][geo][r["width"]].append(r["smoothness"][0][geo])
                if len(r["smoothness"]) > 1:
                    out[r["rule"]][geo][r["width"]].append(max(p[geo] for p in r["smoothness"][1:]))
    return {label: {geo: {w: statistics.fmean(v) for w, v in sorted(per.items())} for geo, per in geos.items()}
            for label, geos in out.items()}


def probe_tables(runs):
    curves = probe_curves(runs)
    if not curves:
        return
    widths = sorted({w for geos in curves.values() for per in geos.values() for w in per})
    print("### Smoothness probe (smoothness sweep: each rule at its grid center)\n")
    print("The loss's curvature along each geometry's steepest direction, sum_l ||H D_l||_* with every hidden "
          "matrix moved by a unit step in its mean-normalized norm: at initialization, and the largest of the "
          "probes at 10%, 50% and 100% of each rule's run (mean over seeds). Exponent: the slope of log L against log(width); the claim is 0.5 for "
          "2̄->2̄ in the worst case and 0 for 2̄->inf.\n")
    geos = list(GEOMETRY_NAMES)
    print("| weights | " + " | ".join("%s at w=%d" % (GEOMETRY_NAMES[g], w) for g in geos[:2] for w in widths)
          + " | " + " | ".join("exponent %s" % GEOMETRY_NAMES[g] for g in geos) + " |")
    print("|---" * (1 + 2 * len(widths) + len(geos)) + "|")
    for label, per_geo in curves.items():
        vals = ["%.3g" % per_geo.get(g, {}).get(w, math.nan) for g in geos[:2] for w in widths]
        exps = []
        for g in geos:
            pts = sorted(per_geo.get(g, {}).items())
            exps.append(fmt(slope([math.log(w) for w, _ in pts], [math.log(v) for _, v in pts]), 2))
        print("| %s | %s | %s |" % (label, " | ".join(vals), " | ".join(exps)))
    print()


def figures(runs, optima, widths, out):
    plt = pyplot()
    if plt is None:
        print("(no matplotlib: figures not drawn)")
        return
    if not optima:
        return
    os.makedirs(out, exist_ok=True)
    rules = list(optima)
    cols = min(len(rules), 7)
    rows = -(-len(rules) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3 * rows), sharey=True, squeeze=False)
    axes = [ax for row in axes for ax in row]
    for ax in axes[len(rules):]:
        ax.set_visible(False)
    for ax, rule in zip(axes, rules):
        for w in widths:
            if w not in optima[rule]:
                continue
            curve = sorted(optima[rule][w][3].items())
            ax.plot([lr for lr, _ in curve], [v if math.isfinite(v) else float("nan") for _, v in curve], "o-",
                    label="w=%d" % w)
        ax.set_xscale("log", base=2)
        ax.set_title(rule, fontsize=9)
        ax.set_xlabel("lr")
    for ax in axes[::cols]:
        ax.set_ylabel("validation loss")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "lr_transfer.png"), dpi=110)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    wide = widths[-1]
    for rule, opt in optima.items():
        if wide not in opt:
            continue
        rs = [r for r in runs if r["sweep"] == "width" and r["rule"] == rule and r["width"] == wide
              and r["lr"] == opt[wide][0] and not r["diverged"]]
        if rs:
            r = rs[0]
            ax.plot([s * r["tokens_per_step"] for s, _, _ in r["val"]], [v for _, v, _ in r["val"]], label=rule)
    ax.set_xlabel("tokens")
    ax.set_ylabel("validation loss (width %d)" % wide)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "loss_vs_tokens.png"), dpi=110)
    print("figures: %s/lr_transfer.png, %s/loss_vs_tokens.png\n" % (out, out))


def pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def depth_figure(depth, out):
    """Loss against lr per depth, one panel per rule and branch scaling."""
    plt = pyplot()
    if plt is None or not depth:
        return
    rules = list(dict.fromkeys(rule for rule, _ in depth))
    scales = list(dict.fromkeys(scale for _, scale in depth))
    fig, axes = plt.subplots(len(rules), len(scales), figsize=(3.2 * len(scales), 2.6 * len(rules)), squeeze=False,
                             sharey="row")
    for i, rule in enumerate(rules):
        for j, scale in enumerate(scales):
            ax = axes[i][j]
            for d, o in sorted(depth.get((rule, scale), {}).items()):
                curve = sorted(o[3].items())
                ax.plot([lr for lr, _ in curve], [v if math.isfinite(v) else float("nan") for _, v in curve], "o-",
                        label="L=%d" % d)
            ax.set_xscale("log", base=2)
            ax.set_title("%s, block lr %s" % (rule, scale), fontsize=9)
        axes[i][0].set_ylabel("validation loss")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "depth.png"), dpi=110)
    print("figure: %s/depth.png" % out)


def probe_figure(curves, out):
    """The smoothness probe against width, one panel per geometry."""
    plt = pyplot()
    if plt is None or not curves:
        return
    fig, axes = plt.subplots(1, len(GEOMETRY_NAMES), figsize=(3.2 * len(GEOMETRY_NAMES), 3))
    for ax, (geo, name) in zip(axes, GEOMETRY_TITLES.items()):
        for label, per_geo in curves.items():
            pts = sorted(per_geo.get(geo, {}).items())
            ax.plot([w for w, _ in pts], [v for _, v in pts], "o-" if label != "init" else "k--",
                    label=label if label == "init" else label + " (largest along training)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("width")
    axes[0].set_ylabel("curvature along D (sum of duals)")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "smoothness.png"), dpi=110)
    print("figure: %s/smoothness.png" % out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs")
    ap.add_argument("--figures")
    ap.add_argument("--target", type=float, help="the validation loss tokens are counted to (default: AdamW's final "
                                                 "loss at its optimum at the widest width)")
    a = ap.parse_args()
    report(a.runs, a.figures, a.target)


def report(path, figures_dir=None, target=None):
    runs = [json.loads(line) for line in open(path)]
    print("%d runs (%s)\n" % (len(runs), ", ".join(sorted({r["mode"] for r in runs}))))
    optima, widths = width_tables(runs)
    speed_tables(runs, optima, widths, target)
    depth = depth_tables(runs)
    smoothness_tables(runs, optima, widths)
    probe_tables(runs)
    if figures_dir:
        figures(runs, optima, widths, figures_dir)
        depth_figure(depth, figures_dir)
        probe_figure(probe_curves(runs), figures_dir)


if __name__ == "__main__":
    main()
