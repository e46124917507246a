"""steepest: neural-network optimizers from norm geometry, from Python.

The optimizers are the C++ library's own (one compiled core; see the repository's README):
`steepest.torch` has them as `torch.optim.Optimizer` subclasses. Tensors and numpy arrays cross
into C++ as views (DLPack / the array interface), never copies.

    import steepest.torch as stt
    opt = stt.Muon(model, lr=0.02)            # Muon on hidden matrices, AdamW on the rest
    opt = stt.MOGARow(model.parameters(), lr=0.01)
    ...
    steepest.save(opt, "state.safetensors")   # the library's checkpoint format

The geometries on their own, for studying norms during training (float32 or float64 arrays or
tensors; more than two dimensions read as first dimension x the rest, as the optimizers do):

    D = steepest.dualize(G, "row", mean=True)  # the steepest direction of 2̄ -> inf
    steepest.norm(W, "spectral")               # ||W|| in the geometry; dual=True: ||G||_*
    steepest.operator_norms(opt)               # every layer's norm in its own geometry

Geometries: "sign" (1 -> inf), "row" (2 -> inf), "col" (1 -> 2), "inf_inf", "one_one",
"spectral" (5 quintic Newton-Schulz steps), "spectral_polar_express", "spectral_exact" (SVD),
"vector_sign", "vector_l2"; `mean=True` is the mean-normalized p̄ -> q̄ version, whose direction
includes the width-aware scale s(m, n).

Muon's Newton-Schulz engine is chosen per shape by timing the engines this build has once (fp32,
the Gram form, bf16 products when built with oneDNN); `steepest.polar_planner()` shows and steers
that choice (`.plans()`, `.force("eigen")`, `.set_mode("estimate")`, `.save(path)`, `.load(path)`;
the environment variable STEEPEST_POLAR_PLAN keeps the choices in a file across runs).

CUDA tensors: `steepest.has_cuda` is True when the package was built with nvcc on the PATH; the
optimizers then step CUDA tensors in place on torch's current stream.
"""
from ._core import Core, Hyper, has_cuda, make, polar_planner  # noqa: F401
from . import _core

GEOMETRIES = ("sign", "row", "col", "inf_inf", "one_one", "spectral", "spectral_polar_express",
              "spectral_exact", "vector_sign", "vector_l2")

__all__ = ["Core", "Hyper", "has_cuda", "make", "save", "load", "dualize", "norm", "operator_norms", "polar_planner", "GEOMETRIES"]


def _contiguous(a):
    return a.contiguous() if hasattr(a, "contiguous") else a


def dualize(G, geometry, mean=False):
    """D(G): the unit-norm direction of steepest descent for G in `geometry` (argmax of <G, D>
    over ||D|| <= 1; times s(m, n) when `mean`), as a new array or tensor like G."""
    G = _contiguous(G)
    if hasattr(G, "new_empty"):
        out = G.new_empty(G.shape)
    else:
        import numpy as np
        G = np.ascontiguousarray(G)
        out = np.empty_like(G)
    _core.dualize(G, out, geometry, mean)
    return out


def norm(W, geometry, mean=False, dual=False):
    """||W|| in `geometry` (mean-normalized when `mean`); its dual norm ||W||_* when `dual`."""
    W = _contiguous(W)
    if not hasattr(W, "new_empty"):
        import numpy as np
        W = np.ascontiguousarray(W)
    return _core.norm(W, geometry, mean, dual)


def operator_norms(optimizer):
    """[(name, geometry, ||W||)] for every tensor a steepest optimizer steps, each in the
    geometry the optimizer gives it (output heads first)."""
    return optimizer.operator_norms()


def save(optimizer, path):
    """Writes the optimizer's state (every parameter group) in the library's safetensors layout:
    one file per group, `path` for the first and `path.<i>` for group i > 0."""
    for i, core in enumerate(optimizer._cores):
        core.save(path if i == 0 else "%s.%d" % (path, i))


def load(optimizer, path):
    """Reads what `save` wrote into an optimizer made for the same parameters and options."""
    for i, core in enumerate(optimizer._cores):
        core.load(path if i == 0 else "%s.%d" % (path, i))
