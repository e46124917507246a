#!/usr/bin/env python3
"""Host-side model of the CUDA Newton-Schulz call sequence (no GPU needed).

include/steepest/cuda/newton_schulz.cuh drives cuBLAS on row-major data that cuBLAS reads as
column-major transposes, with strided batches, padded Gram blocks, out-of-place beta epilogues
and an optional syrk + mirror Gram. Getting an ld, a stride or an operand order wrong there is
easy and, without a GPU, invisible. This script replays the exact same sequence of calls --
the same (transa, transb, M, N, K, lda, stride, ...) arguments, on flat buffers with cuBLAS's
column-major semantics emulated in numpy -- and compares the result with a plain row-major
Newton-Schulz written from the formula. Run: python3 scripts/cuda_ns_model.py

With --precision it instead estimates how far TF32 and BF16 products take Newton-Schulz from the
exact-arithmetic result (inputs of every product rounded to 10 or 7 mantissa bits, to nearest
or truncated, fp32 elsewhere) on the shapes of the GPU test; the GPU test's tolerances are set
from these figures.
"""
import sys
import numpy as np

QUINTIC = (3.4445, -4.7750, 2.0315)


def col_view(buf, off, rows, cols, ld):
    """The rows x cols column-major matrix at buf[off:] with leading dimension ld (a view)."""
    return np.lib.stride_tricks.as_strided(buf[off:], shape=(rows, cols), strides=(buf.itemsize, ld * buf.itemsize))


def gemm(ta, tb, M, N, K, alpha, A, offA, lda, sA, B, offB, ldb, sB, beta, C, offC, D, offD, ldc, sC, batch):
    """cuBLAS(Lt) strided-batched GEMM: D_i = alpha op(A_i) op(B_i) + beta C_i (column-major)."""
    for i in range(batch):
        a = col_view(A, offA + i * sA, K if ta == "T" else M, M if ta == "T" else K, lda)
        b = col_view(B, offB + i * sB, N if tb == "T" else K, K if tb == "T" else N, ldb)
        a = a.T if ta == "T" else a
        b = b.T if tb == "T" else b
        c = col_view(C, offC + i * sC, M, N, ldc).copy()
        res = alpha * (a @ b) + (beta * c if beta != 0 else 0)
        col_view(D, offD + i * sC, M, N, ldc)[:, :] = res


def syrk_lower(trans, n, k, A, offA, lda, C, offC, ldc):
    """cublasSsyrk, lower: C = op(A) op(A)^T, only the lower triangle written; the upper is left
    as garbage (NaN here) so a missing mirror shows up."""
    a = col_view(A, offA, k if trans == "T" else n, n if trans == "T" else k, lda)
    a = a.T if trans == "T" else a
    full = a @ a.T
    c = col_view(C, offC, n, n, ldc)
    for j in range(n):
        for i in range(n):
            c[i, j] = full[i, j] if i >= j else np.nan


def mirror_lower(A, off, k):
    flat = A[off:]
    for j in range(k):
        for i in range(j):  # i < j: upper triangle element (i, j) at j*k+i gets lower (j, i) at i*k+j
            flat[j * k + i] = flat[i * k + j]


def cuda_sequence(Gs, steps, gram, coeffs=QUINTIC, safety=1.0):
    """The call sequence of newton_schulz_batched, transcribed argument by argument."""
    batch, m, n = Gs.shape
    size = m * n
    tall = m > n
    k = n if tall else m
    ld = n
    sx = size
    sa = (k * k + 63) // 64 * 64
    G = Gs.reshape(-1).astype(np.float64).copy()  # row-major, back to back
    X = np.zeros(batch * size)
    Xn = np.zeros(batch * size)
    AB = np.full(2 * batch * sa + batch, np.nan)
    A, offA, offB = AB, 0, batch * sa
    out = np.zeros(batch * size)
    for b in range(batch):
        nrm = np.sqrt(np.sum(G[b * size:(b + 1) * size] ** 2))
        X[b * size:(b + 1) * size] = G[b * size:(b + 1) * size] / (nrm * safety) if nrm > 0 else 0
    if steps == 0:
        return X.reshape(batch, m, n)
    a_, b_, c_ = coeffs
    for s in range(steps):
        nxt = out if s + 1 == steps else Xn
        if gram == "syrk":
            for b in range(batch):
                syrk_lower("N" if tall else "T", k, m if tall else n, X, b * sx, ld, A, offA + b * sa, k)
                mirror_lower(A, offA + b * sa, k)
        else:
            gemm("N" if tall else "T", "T" if tall else "N", k, k, m if tall else n, 1.0, X, 0, ld, sx, X, 0, ld, sx,
                 0.0, A, offA, A, offA, k, sa, batch)
        gemm("N", "N", k, k, k, c_, A, offA, k, sa, A, offA, k, sa, b_, A, offA, A, offB, k, sa, batch)
        if not tall:
            gemm("N", "N", n, m, k, 1.0, X, 0, ld, sx, A, offB, k, sa, a_, X, 0, nxt, 0, ld, sx, batch)
        else:
            gemm("N", "N", n, m, k, 1.0, A, offB, k, sa, X, 0, ld, sx, a_, X, 0, nxt, 0, ld, sx, batch)
        X, Xn = Xn, X
    return out.reshape(batch, m, n)


def reference(Gs, steps, coeffs=QUINTIC):
    """Newton-Schulz from the formula, row-major, one matrix at a time."""
    a, b, c = coeffs
    res = []
    for G in Gs.astype(np.float64):
        X = G / np.linalg.norm(G) if np.linalg.norm(G) > 0 else G * 0
        for _ in range(steps):
            Am = X @ X.T
            X = a * X + (b * Am + c * Am @ Am) @ X
        res.append(X)
    return np.array(res)


def main():
    rng = np.random.default_rng(0)
    worst = 0.0
    cases = [(1, 1, 1), (1, 1, 7), (1, 7, 1), (1, 9, 9), (3, 5, 12), (3, 12, 5), (2, 33, 65), (4, 40, 17), (1, 64, 64)]
    for batch, m, n in cases:
        Gs = rng.standard_normal((batch, m, n)) * (1 + np.arange(batch))[:, None, None]
        if batch > 1:
            Gs[1] = 0  # a zero matrix stays zero
        ref = reference(Gs, 5)
        for gram in ("gemm", "syrk"):
            for steps in (0, 1, 5):
                got = cuda_sequence(Gs, steps, gram)
                want = reference(Gs, steps)
                err = np.max(np.abs(got - want))
                worst = max(worst, err)
                assert np.all(np.isfinite(got)), (batch, m, n, gram, steps)
                assert err < 1e-10, f"batch={batch} {m}x{n} gram={gram} steps={steps}: max error {err:.3g}"
        assert np.allclose(cuda_sequence(Gs, 5, "gemm"), ref)
    print(f"CUDA Newton-Schulz call sequence matches the row-major formula on {len(cases)} shapes x 2 Gram modes "
          f"x 3 step counts (worst abs error {worst:.2g})")


def reduce_mantissa(x, keep, truncate):
    """fp32 -> `keep` mantissa bits (TF32: 10, BF16: 7), to nearest even or truncated."""
    b = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    drop = 23 - keep
    if not truncate:
        b = b + (1 << (drop - 1)) - 1 + ((b >> drop) & 1)
    return ((b >> drop) << drop).astype(np.uint32).view(np.float32).astype(np.float64)


def ns_reduced(G, keep, truncate, steps=5, coeffs=QUINTIC):
    a, b, c = coeffs
    X = (G / np.linalg.norm(G)).astype(np.float32)
    tall = X.shape[0] > X.shape[1]
    X = X.T if tall else X
    r = (lambda M: M.astype(np.float64)) if keep is None else (lambda M: reduce_mantissa(M, keep, truncate))
    for _ in range(steps):
        A = (r(X) @ r(X).T).astype(np.float32)
        B = (b * A + c * (r(A) @ r(A))).astype(np.float32)
        X = (a * X + r(B) @ r(X)).astype(np.float32)
    return X.T if tall else X


def precision():
    rng = np.random.default_rng(1)
    print("shape      tf32-nearest tf32-trunc  bf16-nearest bf16-trunc   (relative Frobenius distance)")
    for m, n in [(1, 1), (5, 1), (33, 65), (65, 33), (256, 256), (129, 700)]:
        G = rng.standard_normal((m, n))
        ref = reference(G[None], 5)[0]
        errs = [np.linalg.norm(ns_reduced(G, k, t) - ref) / np.linalg.norm(ref) for k in (10, 7) for t in (False, True)]
        print(f"{f'{m}x{n}':<10}" + "".join(f"{e:12.2e}" for e in errs))


if __name__ == "__main__":
    precision() if "--precision" in sys.argv else main()
