#!/usr/bin/env python3
"""The library's Muon and AdamW against PyTorch's own optimizers (the conventions' definitions).

    check_torch_conventions.py FIXTURE

FIXTURE is tests/convention_fixture: it steps one matrix with the library and prints the final
weights. Here torch.optim.Muon / torch.optim.AdamW step the same weights with the same gradients
(optim_test::grad_at's formula) and hyper-parameters, and the results are compared:
  - AdamW: to float tolerance;
  - Muon, each adjust_lr_fn, tall and wide matrices: with torch's Newton-Schulz run in float32
    (its function patched to keep the input's dtype), the conventions must agree to float
    tolerance (momentum, Nesterov form, normalization, shape factor, decoupled decay); with
    torch's stock bfloat16 Newton-Schulz, to bfloat16's precision.
Needs PyTorch >= 2.9 (torch.optim.Muon); exit 77 (CTest: skipped) without it. The project's
tests do not depend on PyTorch; a machine with the PyTorch peer venv runs this
(bash ../shared/tools/torch-peer-venv.sh /opt/torch-peer; -DSTEEPEST_TORCH_PEER_PYTHON=...).
"""
import math
import os
import subprocess
import sys

try:
    import torch
    import torch.optim._muon as muon_module
    from torch.optim import Muon
except (ImportError, AttributeError) as e:
    print("skipped: %s (needs PyTorch with torch.optim.Muon)" % e)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, failures, grad_at_list  # noqa: E402

fixture = sys.argv[1]


def grad_at(size, t, salt):
    return torch.tensor(grad_at_list(size, t, salt), dtype=torch.float64).to(torch.float32)


def library(rule, rows, cols, steps, adjust=None):
    args = [fixture, rule, str(rows), str(cols), str(steps)] + ([adjust] if adjust else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    return torch.tensor([float(x) for x in out], dtype=torch.float32).reshape(rows, cols)


def reference(make, rows, cols, steps):
    w0 = torch.tensor([0.05 * math.sin(i + 1.0) for i in range(rows * cols)], dtype=torch.float32).reshape(rows, cols)
    w = torch.nn.Parameter(w0.clone())
    opt = make([w])
    for t in range(1, steps + 1):
        w.grad = grad_at(rows * cols, t, 0.5).reshape(rows, cols)
        opt.step()
    return w0, w.detach()


def rel(a, b, w0):  # difference of the two updates, relative to the update's size
    return float((a - b).norm() / (b - w0).norm())


for rows, cols in ((12, 7), (7, 12)):
    w0, ref = reference(lambda p: torch.optim.AdamW(p, lr=0.02, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1),
                        rows, cols, 5)
    e = rel(library("adamw", rows, cols, 5), ref, w0)
    check(e < 1e-5, "AdamW %dx%d, 5 steps: update differs from torch.optim.AdamW by %.1e" % (rows, cols, e))

stock = muon_module._zeropower_via_newtonschulz


def float32_ns(grad, ns_coefficients, ns_steps, eps):
    """torch's Newton-Schulz with float32 products instead of bfloat16 (same steps otherwise)."""
    real_bf16 = torch.bfloat16
    try:
        torch.bfloat16 = torch.float32  # the function converts with dtype=torch.bfloat16
        return stock(grad, ns_coefficients, ns_steps, eps)
    finally:
        torch.bfloat16 = real_bf16


for adjust in ("original", "match_rms_adamw", "spectral_unclamped"):
    for rows, cols in ((12, 7), (7, 12)):
        make = lambda p: Muon(p, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True, adjust_lr_fn=adjust)
        lib = library("muon", rows, cols, 5, adjust)
        muon_module._zeropower_via_newtonschulz = float32_ns
        w0, ref32 = reference(make, rows, cols, 5)
        muon_module._zeropower_via_newtonschulz = stock
        _, ref16 = reference(make, rows, cols, 5)
        e32, e16 = rel(lib, ref32, w0), rel(lib, ref16, w0)
        check(e32 < 1e-4, "Muon %-18s %dx%d: vs torch.optim.Muon with float32 Newton-Schulz %.1e" % (adjust, rows, cols, e32))
        check(e16 < 3e-2, "Muon %-18s %dx%d: vs stock torch.optim.Muon (bfloat16 products)  %.1e" % (adjust, rows, cols, e16))

print("%d failures" % len(failures))
sys.exit(1 if failures else 0)
