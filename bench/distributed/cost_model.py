#!/usr/bin/env python3
"""The sharded optimizer step's cost model: checked against this machine's measured runs, then
used to project GPT-2 small and a 1B-parameter model to 8-1024 GPUs.

    python3 bench/distributed/cost_model.py MEASURED.jsonl [--markdown OUT.md] [--plot OUT.png]

MEASURED.jsonl is what bench/distributed/run.sh collects: steepest_dist_bench's JSON lines at 1, 2
and 4 ranks (the collectives' times and each rule's step split into local work and collectives).

The model of one sharded step on P ranks (ZeRO-1, distributed/sharded.hpp), N parameters of S bytes:
    t(P) = t_local(P) + t_copy(P) + t_rs(P) + t_ag(P)
    t_rs = t_ag = alpha * (P - 1) + (P - 1) / P * N * S / B        (ring reduce-scatter, all-gather)
    t_local(P) = rows / P   + max over ranks of the whole layers it owns
    t_copy(P) = (2 N + N / P) entries copied at the machine's copy rate
(step_reduce packs the whole gradient into rank order for the reduce-scatter, N, unpacks its
rows, N / P, packs its new rows, N / P, and unpacks everyone else's, N (P - 1) / P)
where "rows" is the time of the row-split layers' step on one rank (elementwise and row rules:
all of it) and the owned layers are balanced exactly as distributed/sharded.hpp balances them (largest
Newton-Schulz cost m n min(m, n) first, each to the least-loaded rank). Only the owned part stops
shrinking with P: once there are more ranks than matrices, the largest matrix sets the floor.

Which numbers are measured and which are projected is printed beside each table.
"""
import argparse
import json
import math
import sys
from collections import defaultdict


# ---- the models ------------------------------------------------------------------------------

def gpt_layers(d, layers, vocab, ctx, fused_qkv=True):
    """(name, rows, cols, kind) of a GPT-2-style model; kind: hidden (Muon's), or other."""
    out = [("wte", vocab, d, "other"), ("wpe", ctx, d, "other")]
    for l in range(layers):
        out += [(f"h{l}.ln1", d, 1, "other"), (f"h{l}.ln1b", d, 1, "other")]
        if fused_qkv:
            out.append((f"h{l}.qkv", 3 * d, d, "hidden"))
        else:
            out += [(f"h{l}.{x}", d, d, "hidden") for x in "qkv"]
        out += [(f"h{l}.qkv_b", 3 * d, 1, "other"), (f"h{l}.proj", d, d, "hidden"), (f"h{l}.proj_b", d, 1, "other"),
                (f"h{l}.ln2", d, 1, "other"), (f"h{l}.ln2b", d, 1, "other"), (f"h{l}.fc", 4 * d, d, "hidden"),
                (f"h{l}.fc_b", 4 * d, 1, "other"), (f"h{l}.fc_proj", d, 4 * d, "hidden"),
                (f"h{l}.fc_proj_b", d, 1, "other")]
    out += [("ln_f", d, 1, "other"), ("ln_fb", d, 1, "other")]
    return out


MODELS = {
    # GPT-2 small: 124.4M parameters (head tied to wte), 48 hidden matrices as the H100 run had them.
    "GPT-2 small (124M)": gpt_layers(768, 12, 50257, 1024),
    # A GPT-style 1B: d = 2048, 16 blocks, untied head: 1.01B parameters, 64 hidden matrices.
    "GPT 1B": gpt_layers(2048, 16, 50257, 2048) + [("head", 50257, 2048, "other")],
}


def ns_flops(m, n, steps=5):
    """Newton-Schulz (quintic) on an m x n matrix, per step: A = X X^T (2 k^2 l), B = bA + cA^2
    (2 k^3), X' = aX + B X (2 k^2 l), k = min(m, n), l = max(m, n)."""
    k, l = min(m, n), max(m, n)
    return steps * (4 * k * k * l + 2 * k ** 3)


def owner_loads(costs, ranks):
    """distributed/sharded.hpp's balancing: largest first, each to the least-loaded rank (ties: lower rank)."""
    load = [0.0] * ranks
    for c in sorted(costs, reverse=True):
        r = min(range(ranks), key=lambda i: (load[i], i))
        load[r] += c
    return load


# ---- measured on this machine ----------------------------------------------------------------

def read(path):
    coll, rules, copy = defaultdict(list), {}, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            o = json.loads(line)
            if o["kind"] == "collective":
                coll[(o["op"], o["ranks"])].append(o)
            elif o["kind"] == "rule":
                rules[(o["rule"], o["ranks"])] = o
            elif o["kind"] == "copy":
                copy[o["ranks"]] = o["ns_per_entry"] * 1e-9
    return coll, rules, copy


def fit_alpha_beta(points, ranks):
    """Least squares t = alpha + bytes_per_rank / B over (entries, median_us) points, where a ring
    moves bytes_per_rank = (P - 1) / P * entries * 4 through each rank."""
    xs = [(ranks - 1) / ranks * p["entries"] * 4.0 for p in points]
    ys = [p["median_us"] * 1e-6 for p in points]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    alpha = max(my - slope * mx, 0.0)
    return alpha, 1.0 / slope


def validate(coll, rules, copy, out):
    """The model's step time at 2 ranks from 1-rank local times and the fitted collectives, against
    the measured 2-rank step (4 ranks share 2 cores here: not a scaling point)."""
    P = 2
    fits = {}
    for op in ("allgatherv", "reduce_scatter"):
        if (op, P) not in coll:
            out.append(f"(no {op} measurements at {P} ranks)")
            return fits
        fits[op] = fit_alpha_beta(coll[(op, P)], P)
    out.append("Collectives at 2 ranks on this machine (Open MPI, shared memory), fitted "
               "t = alpha + (P-1)/P * bytes / B over 1K-4M floats:")
    out.append("")
    out.append("| collective | alpha (us) | B (GB/s) |")
    out.append("|---|---|---|")
    for op, (a, b) in fits.items():
        out.append(f"| {op} | {a * 1e6:.1f} | {b / 1e9:.2f} |")
    out.append("")
    out.append(f"Copies (memcpy on every rank at once): {copy.get(1, 0) * 1e9:.2f} ns per entry at 1 rank, "
               f"{copy.get(P, 0) * 1e9:.2f} at 2 ranks.")
    out.append("")
    out.append("Each rule at 2 ranks, measured against the model. The model's local work: the 1-rank "
               "run's local time less its copies (2N entries), halved, times the measured 2-rank "
               "imbalance of local work (the owners' imbalance for whole-matrix rules), plus the 2-rank "
               "copies (2.5N entries); its collectives from the fit above:")
    out.append("")
    out.append("| rule | N | entries per all-gather / reduce-scatter (measured; formula N) | 1 rank local (ms) | "
               "2 ranks: measured step (ms) [range] | local + copies | reduce-scatter | all-gather | model (ms) | "
               "model / measured |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for (rule, ranks), r in sorted(rules.items()):
        if ranks != P or (rule, 1) not in rules:
            continue
        one = rules[(rule, 1)]
        N = r["params"]
        comm = sum(fits[op][0] + (P - 1) / P * N * 4 / fits[op][1] for op in fits)
        step1 = one["local_ms"] * 1e-3 - 2 * N * copy[1]
        local = step1 / P * r["local_imbalance"] + (2 * N + N / P) * copy[P]
        model = local + comm
        out.append(f"| {rule} | {N / 1e6:.2f}M | {r['gathered'] / 1e6:.2f}M / {r['reduced'] / 1e6:.2f}M | "
                   f"{one['local_ms']:.1f} | {r['step_ms']:.1f} [{r['step_min_ms']:.1f}-{r['step_max_ms']:.1f}] | "
                   f"{r['local_ms']:.1f} | {r['reduce_scatter_ms']:.1f} | {r['allgather_ms']:.1f} | "
                   f"{model * 1e3:.1f} | {model * 1e3 / r['step_ms']:.2f} |")
    return fits


# ---- projected to GPUs -----------------------------------------------------------------------

# Assumed hardware (stated, not measured here): H100 SXM nodes of 8 GPUs.
GPU = {
    "gpus_per_node": 8,
    "nvlink_GBps": 360.0,   # ring bus bandwidth of an all-gather / reduce-scatter inside a node (NVLink 4)
    "ib_GBps": 180.0,       # across nodes, 8 x 400 Gb/s InfiniBand NDR per node, no in-network reduction
    "nvlink_alpha_us": 2.0,  # per ring step inside a node
    "ib_alpha_us": 6.0,      # per ring step once the ring crosses nodes
}
# Measured on an H100 80GB (CUDA 13.0) in the reported run (docs/PERFORMANCE.md), GPT-2 small, one GPU:
H100_MS = {"adamw": 1.82, "moga_row": 1.98, "muon_hidden": 8.90}
H100_COPY_TBps = 2.9  # the same run's device-to-device copy, 2.88-2.99 TB/s (read + write bytes)


def collective_s(P, nbytes):
    if P == 1:
        return 0.0
    inside = P <= GPU["gpus_per_node"]
    bw = (GPU["nvlink_GBps"] if inside else GPU["ib_GBps"]) * 1e9
    alpha = (GPU["nvlink_alpha_us"] if inside else GPU["ib_alpha_us"]) * 1e-6
    return alpha * (P - 1) + (P - 1) / P * nbytes / bw


def project(out, plot_path=None):
    gpt2 = MODELS["GPT-2 small (124M)"]
    n_gpt2 = sum(m * n for _, m, n, _ in gpt2)
    hidden_gpt2 = [(m, n) for _, m, n, k in gpt2 if k == "hidden"]
    n_hidden_gpt2 = sum(m * n for m, n in hidden_gpt2)
    # Per-parameter step times of the memory-bound rules (ms per parameter) from GPT-2 small.
    per_param = {r: H100_MS[r] / n_gpt2 for r in ("adamw", "moga_row")}
    # Newton-Schulz rate implied by the measured Muon step on GPT-2's 48 hidden matrices (the
    # momentum pass is inside the 8.90 ms too: the rate is a lower bound, the projection pessimistic).
    ns_rate = sum(ns_flops(m, n) for m, n in hidden_gpt2) / (H100_MS["muon_hidden"] * 1e-3)
    out.append(f"Calibration (from the measured H100 GPT-2-small steps): AdamW {per_param['adamw'] * 1e9:.1f} ps/param, "
               f"MOGA-row {per_param['moga_row'] * 1e9:.1f} ps/param, Newton-Schulz {ns_rate / 1e12:.0f} TFLOP/s "
               f"effective on GPT-2's hidden matrices ({n_hidden_gpt2 / 1e6:.1f}M of {n_gpt2 / 1e6:.1f}M parameters).")
    out.append("")
    ranks = [1, 8, 16, 32, 64, 128, 256, 512, 1024]
    series = {}
    for name, layers in MODELS.items():
        N = sum(m * n for _, m, n, _ in layers)
        hidden = [(m, n) for _, m, n, k in layers if k == "hidden"]
        n_hidden = sum(m * n for m, n in hidden)
        rows = {
            "AdamW": (N * per_param["adamw"] * 1e-3, []),
            "MOGA-row": (N * per_param["moga_row"] * 1e-3, []),
            # Muon on hidden matrices (owners), AdamW on the rest (row-split)
            "Muon + AdamW": ((N - n_hidden) * per_param["adamw"] * 1e-3, [ns_flops(m, n) / ns_rate for m, n in hidden]),
        }
        out.append(f"**{name}**: N = {N / 1e6:.1f}M parameters, {len(hidden)} hidden matrices; "
                   f"fp32 gradients and weights: {N * 4 / 1e9:.2f} GB per collective. Projected optimizer-step time "
                   f"(ms) = local + packing copies ({(2 * N + N / 8) * 8 / (H100_COPY_TBps * 1e12) * 1e3:.2f} ms at 8 GPUs) "
                   f"+ reduce-scatter + all-gather; in brackets the non-sharded data-parallel step "
                   f"(an all-reduce of the same bytes, then the whole step on every GPU, no copies):")
        out.append("")
        out.append("| GPUs | collectives (RS + AG) | " + " | ".join(rows) + " |")
        out.append("|---|---|" + "---|" * len(rows))
        for P in ranks:
            comm = 2 * collective_s(P, N * 4)
            copies = (2 * N + N / P) * 4 * 2 / (H100_COPY_TBps * 1e12) if P > 1 else 0.0
            cells = []
            for rule, (split_s, owned) in rows.items():
                owned_s = max(owner_loads(owned, P)) if owned else 0.0
                local = split_s / P + owned_s + copies
                unsharded = split_s + sum(owned) + comm
                cells.append(f"{(local + comm) * 1e3:.2f} [{unsharded * 1e3:.2f}]")
                series.setdefault((name, rule), []).append((P, (local + comm) * 1e3, local * 1e3))
            series.setdefault((name, "collectives"), []).append((P, comm * 1e3, 0.0))
            out.append(f"| {P} | {comm * 1e3:.2f} | " + " | ".join(cells) + " |")
        biggest = max(ns_flops(m, n) / ns_rate for m, n in hidden)
        out.append("")
        out.append(f"Muon's owner floor on {name}: the largest hidden matrix's Newton-Schulz, {biggest * 1e3:.3f} ms; "
                   f"with more GPUs than its {len(hidden)} matrices, the extra GPUs own none.")
        out.append("")
    if plot_path:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib not available: no plot", file=sys.stderr)
            return
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
        for ax, name in zip(axes, MODELS):
            for rule, style in (("AdamW", "-o"), ("MOGA-row", "-s"), ("Muon + AdamW", "-^"), ("collectives", "k--")):
                pts = [p for p in series[(name, rule)] if p[0] > 1]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=rule if rule != "collectives" else
                        "RS + AG alone", markersize=4)
                if rule == "Muon + AdamW":
                    ax.plot([p[0] for p in pts], [p[2] for p in pts], ":", color=ax.lines[-1].get_color(),
                            label="Muon + AdamW, local work + copies")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("GPUs (8 per node)")
            ax.set_ylabel("sharded optimizer step (ms), projected")
            ax.set_title(name)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle("ZeRO-1 sharded step: measured H100 local steps + assumed NVLink/IB ring collectives")
        fig.tight_layout()
        fig.savefig(plot_path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("measured")
    ap.add_argument("--markdown")
    ap.add_argument("--plot")
    a = ap.parse_args()
    coll, rules, copy = read(a.measured)
    out = ["### Measured here: the model against the 2-rank runs", ""]
    with open(a.measured) as f:
        for line in f:
            if '"kind":"machine"' in line:
                m = json.loads(line)
                out += [f"Machine: {m['cpu']}, {m['cores']} cores; {m['mpi']}; run {m['date']}.", ""]
    validate(coll, rules, copy, out)
    out += ["", "### Projected: GPT-2 small and 1B on 8-1024 H100s", ""]
    out.append("Assumed network (vendor-class figures, not measured here): " +
               f"{GPU['gpus_per_node']} GPUs per node, ring bus bandwidth {GPU['nvlink_GBps']:.0f} GB/s inside a node "
               f"(NVLink 4) and {GPU['ib_GBps']:.0f} GB/s across nodes (8 x 400 Gb/s InfiniBand per node), "
               f"{GPU['nvlink_alpha_us']:.0f} / {GPU['ib_alpha_us']:.0f} us per ring step. Ring collectives throughout "
               "(NCCL switches to tree / PAT algorithms at scale, which cut the latency term: the projection's "
               "latency is an upper bound).")
    out.append("")
    project(out, a.plot)
    text = "\n".join(out) + "\n"
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
