#!/usr/bin/env python3
"""Is the Gram form of Newton-Schulz accurate with bf16 or fp32 products? (docs/PERFORMANCE.md)

The plain quintic step on a wide iterate X (k x l, k <= l) is

    A = X X^T,  B = b A + c A A,  X <- a X + B X          (2 k^2 l + 2 k^3 + 2 k^2 l flops)

Every B_t is a polynomial in R_0 = X_0 X_0^T, so the iteration can run on k x k matrices only:

    P = a I + b R + c R R,  Q <- P Q,  R <- P R P,  and at the end X = Q X_0

(one k^2 l product before and one after, then four k^3 products a step): 0.56 of the flops at
1024 x 4096. In exact arithmetic both give the same X. This script measures both with the
products' inputs rounded to bf16 and fp32 accumulation (what the oneDNN engine does), against
the same polynomial in float64, on spectra a gradient can have: relative Frobenius error of the
result, and its singular value range. "restart t" recomputes X = Q X_0 and R = X X^T before step
t (two more k^2 l products).

    /opt/torch-peer/bin/python scripts/gram_newton_schulz_study.py [k l [bf16|fp32]]

With fp32, the products are plain float32 GEMMs (the Eigen and OpenBLAS engines' precision).

Runs on the CPU with PyTorch (the peer environment of bench/torch_peer_cpu.py); it is a study,
not a dependency of the library.
"""
import sys

import torch

A_, B_, C_ = 3.4445, -4.7750, 2.0315  # the quintic schedule's coefficients (QuinticSchedule)


def bf16(x):
    return x.to(torch.bfloat16).to(torch.float32)


PRECISION = "bf16"


def prod(x, y):
    """A product with bf16 inputs and fp32 accumulation, or in float32 (PRECISION)."""
    if PRECISION == "fp32":
        return x.float() @ y.float()
    return bf16(x) @ bf16(y)


def plain(g, steps=5, low=False):
    x = g / g.norm()
    if low:
        x = x.float()
    mm = prod if low else (lambda u, v: u @ v)
    for _ in range(steps):
        a = mm(x, x.T)
        b = C_ * mm(a, a) + B_ * a
        x = mm(b, x) + A_ * x
    return x.double()


def gram(g, steps=5, restart=()):
    x0 = (g / g.norm()).float()
    eye = torch.eye(x0.shape[0])
    r, q = prod(x0, x0.T), None
    for t in range(steps):
        if t in restart:
            x0 = prod(q, x0)
            q = None
            r = prod(x0, x0.T)
        p = A_ * eye + B_ * r + C_ * prod(r, r)
        q = p if q is None else prod(p, q)
        if t + 1 < steps:
            r = prod(p, prod(p, r))
            r = 0.5 * (r + r.T)
    return prod(q, x0).double()


def main():
    global PRECISION
    k, l = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (1024, 4096)
    if len(sys.argv) > 3:
        PRECISION = sys.argv[3]
    torch.manual_seed(0)
    u = torch.linalg.qr(torch.randn(k, k, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(l, k, dtype=torch.float64))[0]
    i = torch.arange(1, k + 1, dtype=torch.float64)
    spectra = {
        "power 1/i": 1 / i,
        "power 1/i^2": 1 / i**2,
        "rank 16 + 1e-2": torch.where(i <= 16, 1.0, 1e-2),
        "rank 16 + 1e-3": torch.where(i <= 16, 1.0, 1e-3),
        "geometric 1..1e-4": torch.logspace(0, -4, k, dtype=torch.float64),
    }
    cases = [("gaussian", torch.randn(k, l, dtype=torch.float64))]
    cases += [(name, (u * s) @ v.T) for name, s in spectra.items()]
    print(f"{k} x {l}, {PRECISION} products; relative error against the float64 iteration; singular values of the result")
    print(f"| input | float64 sv | plain, {PRECISION} products | Gram form | Gram, restart at 2 | Gram, restart at 3 | Gram, restart at 2 and 4 |")
    print("|---|---|---|---|---|---|---|")
    for name, g in cases:
        ref = plain(g)
        sv = torch.linalg.svdvals(ref)
        cells = []
        for x in (plain(g, low=True), gram(g), gram(g, restart=(2,)), gram(g, restart=(3,)), gram(g, restart=(2, 4))):
            s = torch.linalg.svdvals(x)
            err = ((x - ref).norm() / ref.norm()).item()
            cells.append(f"{err:.1e} [{s.min().item():.2f}, {s.max().item():.2f}]")
        print(f"| {name} | [{sv.min().item():.2f}, {sv.max().item():.2f}] | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
