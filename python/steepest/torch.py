"""steepest's optimizers as `torch.optim.Optimizer` subclasses (float32 CPU tensors).

Each parameter group is stepped by one compiled optimizer (`steepest.make`) that views the
group's tensors in place. What torch code relies on holds:
  - `param_groups` carry `lr`, `betas`, `eps` and `weight_decay`; a learning-rate scheduler
    changes `lr` between steps (it scales the group's rates, AdamW's route included, by
    lr / initial lr), and the coefficients are read again at every step;
  - `step(closure)` and `zero_grad(set_to_none=True)` (inherited);
  - `state_dict()` / `load_state_dict()` round-trip the state exactly (the library's checkpoint
    bytes under the key "steepest"), so `torch.save(opt.state_dict(), f)` works;
  - a tensor that is not float32, not on the CPU, not contiguous, sparse or complex is refused
    with its name before anything changes.
Roles (hidden matrices, embeddings, the output head, vectors) pick each tensor's geometry and,
for the Muon family, its route: from a module they are inferred as the libtorch adapter does
(`infer_roles`); from plain tensors, 2-D and larger are hidden, the rest vectors; a group may
say `role` for all of its tensors, and `roles={"glob": "role"}` overrides by name.
Not yet: a parameter whose `.grad` is None is refused rather than skipped, and CUDA tensors are
refused (the C++ library steps device memory; this package does not bind it yet).
"""
import fnmatch
import os
import tempfile

import torch

from . import _core

ROLES = ("hidden", "embedding", "output", "vector")
OUTPUT_NAMES = ("*head.weight", "*lm_head.weight", "*output.weight", "*classifier.weight")


def infer_roles(model, roles=None, output_names=OUTPUT_NAMES):
    """[(name, parameter, role)] for every trainable parameter of `model`: an Embedding's weight
    is "embedding"; a Linear whose out_features equals an Embedding's vocabulary, or whose name
    matches `output_names`, is "output"; other tensors of 2 or more dimensions are "hidden"; the
    rest "vector". `roles` ({glob: role}) overrides, last."""
    embeddings, vocab, linears = set(), set(), {}
    for mname, m in model.named_modules():
        prefix = mname + "." if mname else ""
        if isinstance(m, torch.nn.Embedding):
            embeddings.add(prefix + "weight")
            vocab.add(m.num_embeddings)
        elif isinstance(m, torch.nn.Linear):
            linears[prefix + "weight"] = m.out_features
    out = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        role = "hidden" if p.dim() >= 2 else "vector"
        if name in embeddings:
            role = "embedding"
        elif linears.get(name) in vocab or (role == "hidden" and any(fnmatch.fnmatchcase(name, g) for g in output_names)):
            role = "output"
        for glob, r in (roles or {}).items():
            if fnmatch.fnmatchcase(name, glob):
                role = r
        out.append((name, p, role))
    return out


def _check_tensor(t, name, what):
    if t.is_sparse or t.layout != torch.strided:
        raise ValueError("steepest: %s of '%s' is sparse; steepest steps dense tensors" % (what, name))
    if t.is_complex() or t.dtype != torch.float32:
        raise TypeError("steepest: %s of '%s' is %s; steepest steps float32 tensors" % (what, name, t.dtype))
    if t.device.type != "cpu":
        raise ValueError("steepest: %s of '%s' is on %s; this package steps CPU tensors" % (what, name, t.device))
    if not t.is_contiguous():
        raise ValueError("steepest: %s of '%s' is not contiguous" % (what, name))


def _check_all(work):
    """_check_tensor on every parameter and gradient of the step's (group, views, grads) list."""
    for group, _, grads in work:
        for p, g, name in zip(group["params"], grads, group["names"]):
            _check_tensor(p, name, "the parameter")
            _check_tensor(g, name, "the gradient")


class SteepestOptimizer(torch.optim.Optimizer):
    """A named optimizer of the library (`kind`: "adamw", "moga_row", "muon", ...) over torch
    parameters. `params`: a module (roles inferred), or what torch optimizers take (tensors,
    (name, tensor) pairs, or group dicts, which may hold `role` and `names`). For the Muon
    family, `adamw_lr`, `adamw_betas`, `adamw_eps` and `adamw_weight_decay` set the AdamW route
    (embeddings, head, vectors)."""

    def __init__(self, params, kind, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 shape_factor="none", on_non_finite="error", roles=None, adamw_lr=1e-3,
                 adamw_betas=(0.9, 0.999), adamw_eps=1e-8, adamw_weight_decay=0.0):
        if not lr > 0:
            raise ValueError("steepest: lr must be > 0 (a schedule scales it from there)")
        self._kind = kind
        self._names, self._roles = {}, {}
        if isinstance(params, torch.nn.Module):
            named = infer_roles(params, roles)
            params = [p for _, p, _ in named]
            for name, p, role in named:
                self._names[id(p)], self._roles[id(p)] = name, role
        else:
            params = list(params)
            if params and isinstance(params[0], tuple):
                for name, p in params:
                    self._names[id(p)] = name
                params = [p for _, p in params]
        self._overrides = roles or {}
        self._cores = []
        self._detached = []
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        shape_factor=shape_factor, on_non_finite=on_non_finite, adamw_lr=adamw_lr,
                        adamw_betas=tuple(adamw_betas), adamw_eps=adamw_eps,
                        adamw_weight_decay=adamw_weight_decay)
        super().__init__(params, defaults)

    # ---- groups ----------------------------------------------------------------------------
    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group.setdefault("initial_lr", group["lr"])
        names, roles = [], []
        given = group.get("names")
        for i, p in enumerate(group["params"]):
            name = given[i] if given else self._names.get(id(p), "group%d.param%d" % (len(self.param_groups) - 1, i))
            role = group.get("role") or self._roles.get(id(p)) or ("hidden" if p.dim() >= 2 else "vector")
            for glob, r in self._overrides.items():
                if fnmatch.fnmatchcase(name, glob):
                    role = r
            if role not in ROLES:
                raise ValueError("steepest: role '%s' of '%s' is not one of %s" % (role, name, ROLES))
            _check_tensor(p, name, "the parameter")
            names.append(name)
            roles.append(role)
        group["names"], group["roles"] = names, roles
        self._cores.append(_core.make(self._kind, self._hyper(group, ""), self._hyper(group, "adamw_"), names,
                                      roles, [p.detach() for p in group["params"]]))

    @staticmethod
    def _hyper(group, prefix):
        h = _core.Hyper()
        h.lr = group[prefix + "lr"] if prefix else group["initial_lr"]
        h.beta1, h.beta2 = group[prefix + "betas"]
        h.eps = group[prefix + "eps"]
        h.weight_decay = group[prefix + "weight_decay"]
        h.shape_factor = group["shape_factor"]
        h.on_non_finite = group["on_non_finite"]
        return h

    # ---- the step ----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        """One step of every group (after `closure()`, when given, re-evaluates the loss). Every
        tensor is checked before any group is stepped: the compiled core refuses a tensor of
        another dtype, device or layout as it converts the arguments, before it steps, and the
        named message comes from _check_tensor then."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for gi, group in enumerate(self.param_groups):
            params, grads = self._views(gi, group), []
            for p, name in zip(group["params"], group["names"]):
                g = p.grad
                if g is None:
                    raise RuntimeError("steepest: parameter '%s' has no gradient; skipping a parameter is "
                                       "not supported yet (give it a zero gradient, or leave it out)" % name)
                grads.append(g)
            work.append((group, params, grads))
        if len(work) > 1:  # a later group's refusal must not follow an earlier group's step
            _check_all(work)
        for (group, params, grads), core in zip(work, self._cores):
            try:
                core.step(params, grads, group["lr"] / group["initial_lr"], self._hyper(group, ""),
                          self._hyper(group, "adamw_"))
            except TypeError:
                _check_all(work)  # nothing was stepped: name the tensor the core refused
                raise
        return loss

    def _views(self, gi, group):
        """The group's parameters as tensors outside autograd, made once and remade for a
        parameter whose storage moved (`p.data = ...`)."""
        views = self._detached[gi] if gi < len(self._detached) else None
        params = group["params"]
        if views is None or any(v.data_ptr() != p.data_ptr() for v, p in zip(views, params)):
            views = [p.detach() for p in params]
            if gi < len(self._detached):
                self._detached[gi] = views
            else:
                self._detached.append(views)
        return views

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self):
        """torch's dict (param_groups) plus, under "steepest", each group's state as the library's
        checkpoint bytes (exact: a loaded optimizer continues bit for bit)."""
        sd = super().state_dict()
        blobs = []
        with tempfile.TemporaryDirectory() as d:
            for i, core in enumerate(self._cores):
                path = os.path.join(d, "g%d.safetensors" % i)
                core.save(path)
                with open(path, "rb") as f:
                    blobs.append(f.read())
        sd["steepest"] = blobs
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        blobs = state_dict.pop("steepest", None)
        if blobs is None or len(blobs) != len(self._cores):
            raise ValueError("steepest: this state_dict has no steepest state for %d groups" % len(self._cores))
        super().load_state_dict(state_dict)
        with tempfile.TemporaryDirectory() as d:
            for i, (core, blob) in enumerate(zip(self._cores, blobs)):
                path = os.path.join(d, "g%d.safetensors" % i)
                with open(path, "wb") as f:
                    f.write(blob)
                core.load(path)

    def operator_norms(self):
        """[(name, geometry, ||W||)] for every tensor, each in its geometry."""
        return [n for core in self._cores for n in core.operator_norms()]


def _named(kind, **fixed):
    def __init__(self, params, **kw):
        merged = dict(fixed)
        merged.update(kw)
        SteepestOptimizer.__init__(self, params, kind, **merged)
    return __init__


class AdamW(SteepestOptimizer):
    """AdamW (torch.optim.AdamW's update), every tensor."""
    __init__ = _named("adamw")


class AdamWRescaled(SteepestOptimizer):
    """AdamW with the 1̄->inf width scale 1/n on hidden and head matrices."""
    __init__ = _named("adamw_rescaled")


class Lion(SteepestOptimizer):
    """Lion: sign(b1 m + (1 - b1) g), m <- b2 m + (1 - b2) g."""
    __init__ = _named("lion", betas=(0.9, 0.99))


class MOGARow(SteepestOptimizer):
    """MOGA-row: rows 2-normalized, then Adam, times n^(-1/2) (2̄->inf)."""
    __init__ = _named("moga_row")


class MOGACol(SteepestOptimizer):
    """MOGA-col: columns 2-normalized, then Adam, times sqrt(m)/n (1̄->2̄)."""
    __init__ = _named("moga_col")


class Muon(SteepestOptimizer):
    """Muon on hidden matrices (Nesterov momentum `betas[0]`, Newton-Schulz polar factor, shape
    factor "muon" = torch's adjust_lr_fn "original"), AdamW (`adamw_*`) on the rest."""
    __init__ = _named("muon", betas=(0.95, 0.95), shape_factor="muon")


class NorMuon(SteepestOptimizer):
    """NorMuon on hidden matrices, AdamW (`adamw_*`) on the rest."""
    __init__ = _named("normuon", betas=(0.95, 0.95))


class Scion(SteepestOptimizer):
    """Scion: momentum, per-role LMO with radii, constrained step."""
    __init__ = _named("scion", betas=(0.9, 0.999))

