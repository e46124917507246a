#!/usr/bin/env python3
"""The cost of one Python `step()` of steepest.torch against torch's fused AdamW, side by side.

    python bench/python_overhead.py [--repeats 7]

A benchmark, not a test: prints a table. In a Python with the package (pip install .) and torch.
Two models, each optimizer timed in alternation in one window (best of --repeats rounds of
--steps steps each):
  - 100 small tensors (10 x 10): the step is almost all per-call overhead (Python, the
    crossing into C++, per-tensor checks);
  - GPT-2-small's parameter shapes (124M floats): the step is the update itself.
The overhead per step is the small model's time less what the update itself costs there,
estimated from the C++ library's own time for those bytes (the same step through steepest.make,
no torch wrapper), so `overhead = wrapper - core`.
"""
import argparse
import time

import torch

import steepest
import steepest.torch as stt


def small_model():
    return [torch.nn.Parameter(torch.randn(10, 10)) for _ in range(100)]


def gpt2_small():
    d, vocab, ctx, layers = 768, 50257, 1024, 12
    shapes = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
    shapes += [(d,), (d,)]
    return [torch.nn.Parameter(torch.randn(*s) * 0.02) for s in shapes]


def timed(step, steps, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print("torch %s, %d threads" % (torch.__version__, torch.get_num_threads()))
    print("%-22s %-28s %12s" % ("model", "optimizer", "ms / step"))
    for label, make, steps in (("100 tensors of 10x10", small_model, 200), ("GPT-2 small shapes", gpt2_small, 3)):
        params = make()
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        ours = stt.AdamW(params, lr=1e-3, weight_decay=0.1)
        ref = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1, fused=True)
        h = steepest.Hyper()
        h.lr, h.weight_decay = 1e-3, 0.1
        raw = [p.detach() for p in params]
        grads = [p.grad for p in params]
        core = steepest.make("adamw", h, steepest.Hyper(), ["p%d" % i for i in range(len(raw))],
                             ["hidden" if p.dim() >= 2 else "vector" for p in raw], raw)
        rows = {}
        for _ in range(3):  # alternate, so the three share the machine's state
            rows["steepest.torch.AdamW"] = min(rows.get("steepest.torch.AdamW", 1e9), timed(ours.step, steps, args.repeats))
            rows["steepest core (no wrapper)"] = min(rows.get("steepest core (no wrapper)", 1e9),
                                                     timed(lambda: core.step(raw, grads, 1.0, h, steepest.Hyper()),
                                                           steps, args.repeats))
            rows["torch AdamW(fused=True)"] = min(rows.get("torch AdamW(fused=True)", 1e9), timed(ref.step, steps, args.repeats))
        for name, t in rows.items():
            print("%-22s %-28s %12.3f" % (label, name, t * 1e3))
        if label.startswith("100"):
            print("%-22s %-28s %12.1f us" % (label, "wrapper overhead per step",
                                           (rows["steepest.torch.AdamW"] - rows["steepest core (no wrapper)"]) * 1e6))


if __name__ == "__main__":
    main()
