#!/usr/bin/env python3
"""The width, depth and smoothness study on a transformer: MOGA against Muon and AdamW.

    bash scripts/transformer_study.sh quick     # set-up (a venv with torch and the package), then
                                                # about 7 minutes of runs on 2 cores; tables
    bash scripts/transformer_study.sh full      # about 3.5 hours of runs on 2 cores
    python examples/transformer_study/study.py --mode quick --out build-study   # in a Python with both
    python examples/transformer_study/analyze.py build-study/runs.jsonl [--figures DIR]

The model is examples/python/gpt.py's pre-LN GPT (GELU MLP, untied head, learned positions) with
the attention's q, k and v as three d x d matrices: the fused QKV weight split into its three
blocks, which is what the matrix rules must see (a row or column normalization, or a polar
factor, of the fused 3d x d matrix is another rule). Data: the bytes of Debian's fortunes, every
10th 4 KiB block held out; every run of one seed sees the same batches in the same order.

Rules (steepest.torch; one global learning rate per rule, swept on a grid a factor 2 apart around
the rule's center; AdamW routes' rates move with it, at a fixed ratio):
    adamw              AdamW in the standard parameterization (every tensor)
    adamw_rescaled     AdamW with the 1̄->inf width scale 1/n on hidden and head matrices
    moga_row           rows 2-normalized, then Adam, times n^(-1/2) (2̄->inf)
    moga_col           columns 2-normalized, then Adam, times sqrt(m)/n (1̄->2̄)
    moga_row_momentum  momentum, then rows normalized (no second moment)
    muon               Muon on hidden matrices + AdamW on embeddings, head and vectors
    scion              Scion: momentum, per-role LMO with radii, constrained step
Every run has the MLP study's protocol (docs/TRANSFER.md): linear warm-up over 5% of the steps,
then linear decay; diverged when the loss is non-finite, a gradient is (the step refuses it), or
the loss exceeds 1.5 ln V after the first 10% of steps; no weight decay; torch's default
initialization. Per run it records the training loss, the validation loss every `eval_every` steps, the time of
forward + backward and of the optimizer step (medians, and the recorded total at each
evaluation: a comparison at equal wall time uses recorded costs), and, at a few steps, each matrix's operator
norm in the geometry its optimizer gives it (steepest.operator_norms) and the spectral norm of
the step's update of each hidden matrix.

Sweeps:
    width  widths 32 to 256 (8x; heads = width / 32, at least 1), depth 2, every rule, every lr,
           every seed;
    depth  depths 1-8 at one width, for the rules in DEPTH_RULES, with the block matrices' rates
           as they are ("none") and times 1/depth ("1/L") and 1/sqrt(depth) ("1/sqrt(L)"); a
           scaled run's grid reaches as many octaves higher as its scale takes away;
    smoothness  the width sweep's widths, the rules in SMOOTHNESS_RULES at their grid centers,
           every seed; before the first step and at 10%, 50% and 100% of training, the loss's
           curvature along the steepest direction of each geometry in PROBE_GEOMETRIES
           (local_smoothness).
Runs are appended to <out>/runs.jsonl as they finish, and a run already there is not run again,
so an interrupted sweep resumes where it stopped. Costs (AMD EPYC Zen 5, 2 threads, batch 16 x
64 tokens, depth 2): forward + backward 10 / 20 / 60 / 205 ms at widths 64 / 128 / 256 / 512;
the optimizer step 0.6-7.5 ms for the elementwise and row rules, 5-123 ms for Muon; the full mode
is 1,232 runs of 300 steps plus the grid ends' (about 3.5 hours), the quick mode 207 runs of 100
steps at batch 8 plus the grid ends' (about 7 minutes).
"""
import argparse
import copy
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from gpt import default_files, load_corpus  # noqa: E402  (the corpus and its split)

import analyze  # noqa: E402  (the tables; edge_jobs reads optima as they do)
import steepest  # noqa: E402
import steepest.torch as stt  # noqa: E402

PAPER_RULES = ("adamw", "adamw_rescaled", "moga_row", "moga_col", "moga_row_momentum", "muon", "scion")
# The rules composed from the library's transforms (docs/OPTIMIZERS.md), after the paper's
COMPOSED_RULES = ("cautious_adamw", "normuon", "adamuon", "polargrad", "muon_eq", "muon_plus")
RULES = PAPER_RULES + COMPOSED_RULES
DEPTH_RULES = ("adamw", "moga_row", "muon")
SMOOTHNESS_RULES = ("adamw", "moga_row", "muon")  # the claim's two geometries, and the baseline
# Each rule's grid center: for the paper's rules, the quick mode's optimum at width 64 (100 steps of
# batch 8; 3 points 4x apart, so 2 octaves coarse); for the composed rules, the geometric mean of
# their optima at widths 32 and 256 in a pre-scan at the quick mode's settings (7 points 4x apart,
# docs/transformer/prescan-runs.jsonl); both halved for the full mode's 6x more tokens. The full
# grid spans 3 octaves either side.
CENTER = {"adamw": 4e-3, "adamw_rescaled": 0.5, "moga_row": 0.06, "moga_col": 0.06, "moga_row_momentum": 0.12,
          "muon": 0.04, "scion": 4e-4,
          "cautious_adamw": 4e-3, "normuon": 0.016, "adamuon": 0.016, "polargrad": 0.016, "muon_eq": 0.04,
          "muon_plus": 0.016}
# The quick mode's centers: the paper's rules' provisional centers, set before any sweep (the quick
# mode's optima then set CENTER).
QUICK_CENTER = {"adamw": 2e-3, "adamw_rescaled": 0.25, "moga_row": 0.03, "moga_col": 0.03, "moga_row_momentum": 0.03,
                "muon": 0.02, "scion": 2e-4}
# The Muon family: rule -> (shape factor, the AdamW route's lr as a multiple of the global lr).
# Muon's route keeps the ratio of the usual pair (0.02 for the matrices, 3e-3 for AdamW); the rules
# whose update is scaled to AdamW's RMS (NorMuon, AdaMuon, Muon+ with its `match_adamw` shape)
# share one lr with their route, as their authors do; PolarGrad's route gets Muon's route's lr at
# the grid center.
MUON_FAMILY = {"muon": ("muon", 3e-3 / 0.02), "muon_eq": ("muon", 3e-3 / 0.02), "normuon": ("none", 1.0),
               "adamuon": ("none", 1.0), "muon_plus": ("match_adamw", 1.0),
               "polargrad": ("none", CENTER["muon"] * 3e-3 / 0.02 / CENTER["polargrad"])}

MODES = {
    # widths, depth of the width sweep, lr offsets (octaves), seeds, steps, eval_every, depths, depth width
    # the quick mode cut down to seconds (CTest's transformer_study_smoke): every code path, few steps
    "smoke": dict(widths=(32, 64), depth=1, octaves=(0,), seeds=(0,), steps=6, eval_every=3, depths=(1, 2),
                  depth_width=32, rules=("adamw", "moga_row", "muon", "normuon"), batch=4, context=32, center=CENTER),
    "quick": dict(widths=(32, 64, 128, 256), depth=2, octaves=(-2, 0, 2), seeds=(0,), steps=100, eval_every=25,
                  depths=(1, 2, 4, 8), depth_width=64, rules=PAPER_RULES, batch=8, context=64, center=QUICK_CENTER),
    "full": dict(widths=(32, 64, 128, 256), depth=2, octaves=(-3, -2, -1, 0, 1, 2, 3), seeds=(0, 1), steps=300,
                 eval_every=25, depths=(1, 2, 4, 8), depth_width=64, rules=RULES, batch=16, context=64, center=CENTER),
}


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, D = x.shape
        h = self.ln1(x)
        q, k, v = (m(h).view(B, T, self.heads, D // self.heads).transpose(1, 2) for m in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, D))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab, width, layers, context):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, max(1, width // 32)) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln(x))


def make_optimizer(rule, model, lr, block_scale):
    """The rule over the model; `block_scale` multiplies the rates of the blocks' matrices."""
    named = stt.infer_roles(model)
    in_blocks = [(n, p, r) for n, p, r in named if n.startswith("blocks.") and r == "hidden"]
    rest = [(n, p, r) for n, p, r in named if not (n.startswith("blocks.") and r == "hidden")]
    groups = [{"params": [p for _, p, _ in rest], "names": [n for n, _, _ in rest]},
              {"params": [p for _, p, _ in in_blocks], "names": [n for n, _, _ in in_blocks], "role": "hidden",
               "lr": lr * block_scale}]
    groups = [g for g in groups if g["params"]]
    rest_roles = {n: r for n, _, r in rest}  # exact names, as globs: the roles inferred from the module
    if rule in MUON_FAMILY:
        shape, ratio = MUON_FAMILY[rule]
        return stt.SteepestOptimizer(groups, rule, lr=lr, betas=(0.95, 0.95), shape_factor=shape, roles=rest_roles,
                                     adamw_lr=lr * ratio, adamw_betas=(0.9, 0.95))
    # every other rule is the package's kind of the same name; Scion with the package's own betas
    betas = (0.9, 0.999) if rule == "scion" else (0.9, 0.95)
    return stt.SteepestOptimizer(groups, rule, lr=lr, betas=betas, roles=rest_roles)


def spectral(m):
    return float(torch.linalg.matrix_norm(m.double(), ord=2))


# The geometries whose smoothness the probe estimates, all mean-normalized: 2̄->2̄ (Muon's), 2̄->inf
# (MOGA-row's), 1̄->2̄ (MOGA-col's), 1̄->inf (rescaled AdamW's). The spectral one by an exact SVD.
PROBE_GEOMETRIES = ("spectral_exact", "row", "col", "sign")
PROBE_RADIUS = 1e-3


def local_smoothness(model, names, loss_of):
    """The loss's curvature along each geometry's steepest direction, at the model's weights.

    With the layers' norm the largest of the hidden matrices' norms ||D|| = max_l ||D_l|| (every
    norm mean-normalized, so its unit does not depend on width), the steepest direction for the
    probe batch's gradient G moves every hidden matrix by D_l = dualize(G_l), a unit step; then

        L_D = sum_l ||G_l(W + r D) - G_l(W - r D)||_{*,l} / (2 r)

    is ||H D||_* (the dual of the max is the sum of duals), a lower estimate of the smoothness
    constant sup ||H D||_* / ||D|| that the first paper bounds: width-independent for the row rule,
    possibly growing like sqrt(width) for the spectral one. Central differences in float64 on a
    copy, so the training run is not touched. `loss_of(m)`: the probe batch's loss of a model m.
    """
    m = copy.deepcopy(model).double()
    params = dict(m.named_parameters())

    def grads():
        m.zero_grad(set_to_none=True)
        loss_of(m).backward()
        return {n: params[n].grad.detach().clone() for n in names}

    g = grads()
    base = {n: params[n].detach().clone() for n in names}
    out = {}
    for geo in PROBE_GEOMETRIES:
        d = {n: steepest.dualize(g[n], geo, mean=True) for n in names}
        moved = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for n in names:
                    params[n].copy_(base[n] + sign * PROBE_RADIUS * d[n])
            moved.append(grads())
        out[geo] = sum(steepest.norm(moved[0][n] - moved[1][n], geo, mean=True, dual=True) for n in names) \
            / (2 * PROBE_RADIUS)
    return out


def check_local_smoothness():
    """local_smoothness against closed forms on a least-squares layer, f(W) = |W X - Y|^2 / 2,
    whose Hessian is exact for central differences: H D = D X X^T, and for a 12 x 5 W the
    mean-normalized steepest directions and dual norms written out (s = sqrt(m/n) for 2̄->2̄ with
    D = s U V^T and ||.||_* = s * nuclear; 1/sqrt(n) for 2̄->inf with D = rows / |row| / sqrt(n)
    and ||.||_* = sum of row norms / sqrt(n))."""
    gen = torch.Generator().manual_seed(5)
    layer = nn.Linear(5, 12, bias=False)
    xt, yt = torch.randn(40, 5, generator=gen), torch.randn(40, 12, generator=gen)
    got = local_smoothness(layer, ["weight"], lambda m: 0.5 * ((m(xt.double()) - yt.double()) ** 2).sum())
    W, X = layer.weight.detach().double(), xt.double().T
    G = (W @ X - yt.double().T) @ X.T
    m, n = G.shape
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    D = math.sqrt(m / n) * U @ Vh
    want = {"spectral_exact": math.sqrt(m / n) * float(torch.linalg.svdvals(D @ X @ X.T).sum())}
    D = G / G.norm(dim=1, keepdim=True) / math.sqrt(n)
    want["row"] = float((D @ X @ X.T).norm(dim=1).sum()) / math.sqrt(n)
    for geo, value in want.items():
        assert abs(got[geo] - value) <= 1e-6 * value, (geo, got[geo], value)


def train(rule, width, depth, lr, seed, block_scale, cfg, data, log_at, probe_at=()):
    """One run: a dict of what it recorded. At the steps in `probe_at` (0: before the first) it
    also estimates the loss's smoothness in each of PROBE_GEOMETRIES (local_smoothness)."""
    train_ids, val_ids, vocab = data
    torch.manual_seed(seed)
    model = GPT(vocab, width, depth, cfg["context"])
    opt = make_optimizer(rule, model, lr, block_scale)
    # The MLP study's schedule (docs/TRANSFER.md): linear warm-up over the first 5% of steps, then a
    # linear decay towards 0.
    steps, warm = cfg["steps"], max(1, cfg["steps"] // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * (1.0 - s / (steps + 1)))
    hidden = {n: p for n, p, r in stt.infer_roles(model) if r == "hidden"}
    matrices = {n for n, p in model.named_parameters() if p.dim() >= 2}
    batches = torch.Generator().manual_seed(1000)  # the same data order for every run
    vgen_seed = 2000
    T, B = cfg["context"], cfg["batch"]

    def batch(ids, gen):
        at = torch.randint(0, len(ids) - T - 1, (B,), generator=gen)
        w = torch.stack([ids[i:i + T + 1] for i in at.tolist()])
        return w[:, :-1], w[:, 1:]

    def validate():
        with torch.no_grad():
            g = torch.Generator().manual_seed(vgen_seed)
            return sum(F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1)).item()
                       for x, y in (batch(val_ids, g) for _ in range(8))) / 8

    rec = dict(rule=rule, width=width, depth=depth, lr=lr, seed=seed, block_scale=block_scale, steps=cfg["steps"],
               tokens_per_step=B * T, train=[], val=[], norms=[], smoothness=[], diverged=False)
    px, py = batch(val_ids, torch.Generator().manual_seed(3000)) if probe_at else (None, None)

    def probe_smoothness(step):
        if step in probe_at:
            values = local_smoothness(model, sorted(hidden), lambda m: F.cross_entropy(m(px).reshape(-1, vocab),
                                                                                         py.reshape(-1)))
            rec["smoothness"].append(dict(step=step, **{k: round(v, 4) for k, v in values.items()}))

    probe_smoothness(0)
    fwd_bwd, opt_ms, spent, smoothed = [], [], 0.0, None
    for step in range(1, cfg["steps"] + 1):
        x, y = batch(train_ids, batches)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        t1 = time.perf_counter()
        before = {n: p.detach().clone() for n, p in hidden.items()} if step in log_at else None
        t2 = time.perf_counter()
        try:
            opt.step()
        except FloatingPointError:  # a non-finite gradient: the run diverged
            rec["diverged"] = True
            break
        t3 = time.perf_counter()
        fwd_bwd.append(1e3 * (t1 - t0))
        opt_ms.append(1e3 * (t3 - t2))
        spent += fwd_bwd[-1] + opt_ms[-1]
        sched.step()
        value = loss.item()
        if not math.isfinite(value) or (step > steps // 10 and value > 1.5 * math.log(vocab)):
            rec["diverged"] = True  # the MLP study's rule
            break
        smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
        if step % 10 == 0:
            rec["train"].append([step, round(smoothed, 4)])
        if before is not None:
            rec["norms"].append(dict(step=step, operator=[[n, g, round(v, 5)] for n, g, v in steepest.operator_norms(opt)
                                               if n in matrices],
                                     update_spectral={n: round(spectral(p.detach() - before[n]), 6)
                                                      for n, p in hidden.items()}))
        probe_smoothness(step)
        if step % cfg["eval_every"] == 0 or step == cfg["steps"]:
            rec["val"].append([step, round(validate(), 4), round(spent, 1)])  # (step, loss, recorded ms so far)
    rec["fwd_bwd_ms"] = round(statistics.median(fwd_bwd), 2) if fwd_bwd else None
    rec["opt_ms"] = round(statistics.median(opt_ms), 3) if opt_ms else None
    return rec


# The depth sweep's branch scales: the block matrices' rates times depth ** -exponent.
BRANCH_EXPONENT = {"none": 0.0, "1/L": 1.0, "1/sqrt(L)": 0.5}


def depth_octaves(cfg, depth, scale):
    """A depth run's lr grid (octaves from the center): the width sweep's, extended upwards by
    the branch scale's octaves, so the block matrices' rates (the global lr times the scale)
    still reach the top of the unscaled grid."""
    octaves = list(cfg["octaves"])
    step = octaves[1] - octaves[0] if len(octaves) > 1 else 1
    shift = BRANCH_EXPONENT[scale] * math.log2(depth)  # the octaves depth ** -exponent takes away
    return octaves + [octaves[-1] + step * j for j in range(1, math.ceil(shift / step - 1e-9) + 1)]


EDGE_OCTAVES = 3  # how far past its planned grid a curve's lr grid may be extended


def edge_jobs(path, mode, cfg, sweeps):
    """The runs one grid step past each width or depth curve's optimum (the lowest mean loss over
    seeds, a diverged seed counting as infinite) where it is the highest or lowest lr tried, at
    most EDGE_OCTAVES past the planned grid."""
    runs = [r for r in map(json.loads, open(path))
            if r["sweep"] in sweeps and r["sweep"] != "smoothness" and r["mode"] == mode]
    octaves = cfg["octaves"]
    step = octaves[1] - octaves[0] if len(octaves) > 1 else 0
    jobs = []
    for (sweep, rule, width, depth, scale), curve in analyze.by(runs, "sweep", "rule", "width", "depth",
                                                                 "block_scale_name").items():
        best, _, _, mean = analyze.optimum(curve)
        if len(mean) < 3:
            continue
        top = max(depth_octaves(cfg, depth, scale)) if sweep == "depth" else octaves[-1]
        for end, direction in ((max(mean), 1), (min(mean), -1)):
            k = round(math.log2(best / cfg["center"][rule])) + direction * step
            if best == end and octaves[0] - EDGE_OCTAVES <= k <= top + EDGE_OCTAVES:
                jobs += [(sweep, rule, width, depth, cfg["center"][rule] * 2.0 ** k, seed, scale) for seed in cfg["seeds"]]
    return jobs


def run_jobs(todo, path, mode, cfg, data):
    """Runs each job and appends what it recorded to `path`."""
    log_at = {1, cfg["steps"] // 2, cfg["steps"]}
    probe_at = {0, cfg["steps"] // 10, cfg["steps"] // 2, cfg["steps"]}
    with open(path, "a") as out:
        for i, (sweep, rule, width, depth, lr, seed, scale) in enumerate(todo, 1):
            factor = depth ** -BRANCH_EXPONENT[scale]
            t0 = time.perf_counter()
            # (the smoothness logs answer a claim about width: the depth sweep's runs skip them)
            rec = train(rule, width, depth, lr, seed, factor, cfg, data, log_at if sweep == "width" else set(),
                        probe_at if sweep == "smoothness" else ())
            rec.update(sweep=sweep, block_scale_name=scale, mode=mode)
            out.write(json.dumps(rec) + "\n")
            out.flush()
            last = rec["val"][-1][1] if rec["val"] else float("nan")
            print("[%d/%d] %-5s %-17s width %3d depth %d lr %.3g seed %d scale %-9s val %.3f%s (%.1f s)"
                  % (i, len(todo), sweep, rule, width, depth, lr, seed, scale, last,
                     " diverged" if rec["diverged"] else "", time.perf_counter() - t0), flush=True)
            if mode == "smoke" and (rec["diverged"] or len(rec["val"]) < 2 or not rec["val"][-1][1] < rec["val"][0][1]):
                sys.exit("smoke run did not train: %s" % rec["val"])  # every rule at its grid center must


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=sorted(MODES), default="quick")
    ap.add_argument("--out", default="build-study")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sweeps", nargs="+", choices=("width", "depth", "smoothness"),
                    default=("width", "depth", "smoothness"))
    ap.add_argument("--fresh", action="store_true", help="forget the runs already recorded in --out")
    a = ap.parse_args()
    cfg = MODES[a.mode]
    torch.set_num_threads(a.threads)
    if a.mode == "smoke":
        check_local_smoothness()
    data = load_corpus(default_files())
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "runs.jsonl")
    if a.fresh and os.path.exists(path):
        os.remove(path)
    done = set()
    if os.path.exists(path):  # resume: a run already recorded is not run again
        for line in open(path):
            r = json.loads(line)
            done.add((r["sweep"], r["rule"], r["width"], r["depth"], r["lr"], r["seed"], r["block_scale_name"]))
    jobs = []
    if "width" in a.sweeps:  # seed by seed, so an interrupted sweep has whole curves of every rule
        for seed in cfg["seeds"]:
            for rule in cfg["rules"]:
                for width in cfg["widths"]:
                    for k in cfg["octaves"]:
                        jobs.append(("width", rule, width, cfg["depth"], cfg["center"][rule] * 2.0 ** k, seed, "none"))
    if "depth" in a.sweeps:
        for rule in [r for r in DEPTH_RULES if r in cfg["rules"]]:
            for depth in cfg["depths"]:
                for scale in ("none", "1/L", "1/sqrt(L)"):
                    if depth == 1 and scale != "none":
                        continue  # the same run as "none"
                    for k in depth_octaves(cfg, depth, scale):
                        for seed in cfg["seeds"]:
                            jobs.append(("depth", rule, cfg["depth_width"], depth, cfg["center"][rule] * 2.0 ** k, seed, scale))
    if "smoothness" in a.sweeps:  # every rule's run at its grid center, probed along the way
        for rule in [r for r in SMOOTHNESS_RULES if r in cfg["rules"]]:
            for width in cfg["widths"]:
                for seed in cfg["seeds"]:
                    jobs.append(("smoothness", rule, width, cfg["depth"], cfg["center"][rule], seed, "none"))
    todo = [j for j in jobs if j not in done]
    print("transformer study, %s mode: %d runs of %d steps (%d already recorded in %s)"
          % (a.mode, len(jobs), cfg["steps"], len(jobs) - len(todo), path), flush=True)
    run_jobs(todo, path, a.mode, cfg, data)
    while True:  # then one grid step past every optimum at its grid's end, until none is
        todo = [j for j in edge_jobs(path, a.mode, cfg, a.sweeps) if j not in done]
        if not todo:
            break
        print("%d runs past optima at their grid's end" % len(todo), flush=True)
        run_jobs(todo, path, a.mode, cfg, data)
        done.update(todo)
    print("\nruns: %s; tables: python %s %s" % (path, os.path.join(os.path.dirname(__file__), "analyze.py"), path))
    if a.mode == "smoke":  # the analysis too, on what the smoke mode recorded
        analyze.report(path)


if __name__ == "__main__":
    main()
