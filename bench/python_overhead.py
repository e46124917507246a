#!/usr/bin/env python3
"""The cost of one Python `step()` of steepest.torch against torch's fused AdamW, side by side.

    python bench/python_overhead.py [--repeats 7]

A benchmark, not a test: prints a table. In a Python with the package (pip install .) and torch.
Two models, each optimizer timed in alternation in one window (best of --repeats rounds of
--steps steps each):
  - 100 small tensors (10 x 10): the step is almost all per-call overhead (Python, the
    crossing into C++, per-tensor checks);
  - GPT-2-small's parameter shapes (124M floats): the step is the update itself.
"library step" is the time the compiled core spends inside the library's step (it times
itself: Core.last_step_seconds, averaged over the same steps); the crossing overhead per step is
the Python step's time less that: the Python code, the per-tensor calls of torch's methods from
C++ (data_ptr, .grad, .dtype, is_contiguous), the checks of the arguments. Part of it is what
torch.optim.Optimizer wraps every subclass's step() in (profiler range, step hooks), which
torch's own optimizers pay too: the empty step of a subclass that does nothing, timed in the same
rounds, measures it. So does the floor of what any optimizer outside torch's C++ API pays per
tensor: the five reads of torch's own attributes that a safe step needs (the parameter's
data_ptr, its .grad, and the gradient's dtype, is_contiguous and data_ptr), timed as a plain
Python loop over the model's tensors.
"""
import argparse
import time

import torch

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


class EmptyStep(torch.optim.Optimizer):
    """A torch optimizer whose step does nothing: what torch's step wrapper costs alone."""

    def __init__(self, params):
        super().__init__(params, {})

    def step(self, closure=None):
        return None


def torch_reads(params):
    """The five torch attribute reads per tensor that steepest's step makes (in C++), in Python."""
    def reads():
        for p in params:
            p.data_ptr()
            g = p.grad
            g.dtype
            g.is_contiguous()
            g.data_ptr()
    return reads


def timed(step, steps, repeats, core=None):
    """(best seconds per step over `repeats` rounds, the library's own seconds per step in that
    round when `core` is given)."""
    best, inside = float("inf"), 0.0
    for _ in range(repeats):
        spent = 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
            if core is not None:
                spent += core.last_step_seconds
        t = (time.perf_counter() - t0) / steps
        if t < best:
            best, inside = t, spent / steps
    return best, inside


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    print("torch %s, %d threads" % (torch.__version__, torch.get_num_threads()))
    print("%-22s %-34s %12s" % ("model", "optimizer", "ms / step"))
    for label, make, steps in (("100 tensors of 10x10", small_model, 200), ("GPT-2 small shapes", gpt2_small, 3)):
        params = make()
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        ours = stt.AdamW(params, lr=1e-3, weight_decay=0.1)
        ref = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1, fused=True)
        empty = EmptyStep(params)
        rows = {}
        for _ in range(3):  # alternate, so the three share the machine's state
            t, inside = timed(ours.step, steps, args.repeats, ours._cores[0])
            if t < rows.get("steepest.torch.AdamW", 1e9):
                rows["steepest.torch.AdamW"], rows["  of which the library step"] = t, inside
            rows["torch AdamW(fused=True)"] = min(rows.get("torch AdamW(fused=True)", 1e9),
                                                  timed(ref.step, steps, args.repeats)[0])
            rows["torch's step wrapper alone"] = min(rows.get("torch's step wrapper alone", 1e9),
                                                     timed(empty.step, steps, args.repeats)[0])
            rows["torch's 5 reads per tensor alone"] = min(rows.get("torch's 5 reads per tensor alone", 1e9),
                                                           timed(torch_reads(params), steps, args.repeats)[0])
        for name, t in rows.items():
            print("%-22s %-34s %12.3f" % (label, name, t * 1e3))
        crossing = rows["steepest.torch.AdamW"] - rows["  of which the library step"]
        print("%-22s %-34s %12.1f us" % (label, "crossing overhead per step", crossing * 1e6))
        ours = crossing - rows["torch's step wrapper alone"]
        print("%-22s %-34s %12.1f us" % (label, "  less torch's step wrapper", ours * 1e6))
        print("%-22s %-34s %12.1f us" % (label, "  less torch's reads too", (ours - rows["torch's 5 reads per tensor alone"]) * 1e6))


if __name__ == "__main__":
    main()
