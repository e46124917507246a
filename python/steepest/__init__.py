"""steepest: neural-network optimizers from norm geometry, from Python.

The optimizers are the C++ library's own (one compiled core; see the repository's README):
`steepest.torch` has them as `torch.optim.Optimizer` subclasses. Tensors and numpy arrays cross
into C++ as views (DLPack / the array interface), never copies.

    import steepest.torch as stt
    opt = stt.Muon(model, lr=0.02)            # Muon on hidden matrices, AdamW on the rest
    opt = stt.MOGARow(model.parameters(), lr=0.01)
    ...
    steepest.save(opt, "state.safetensors")   # the library's checkpoint format
"""
from ._core import Core, Hyper, make  # noqa: F401

__all__ = ["Core", "Hyper", "make", "save", "load"]


def save(optimizer, path):
    """Writes the optimizer's state (every parameter group) in the library's safetensors layout:
    one file per group, `path` for the first and `path.<i>` for group i > 0."""
    for i, core in enumerate(optimizer._cores):
        core.save(path if i == 0 else "%s.%d" % (path, i))


def load(optimizer, path):
    """Reads what `save` wrote into an optimizer made for the same parameters and options."""
    for i, core in enumerate(optimizer._cores):
        core.load(path if i == 0 else "%s.%d" % (path, i))
