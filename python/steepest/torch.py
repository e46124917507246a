"""steepest's optimizers as `torch.optim.Optimizer` subclasses (float32 tensors, CPU or CUDA).

Each parameter group is stepped by one compiled optimizer (`steepest.make`) that views the
group's tensors in place. What torch code relies on holds:
  - `param_groups` carry `lr`, `betas`, `eps` and `weight_decay`; a learning-rate scheduler
    changes `lr` between steps (it scales the group's rates, AdamW's route included, by
    lr / initial lr), and the coefficients are read again at every step;
  - `step(closure)` and `zero_grad(set_to_none=True)` (inherited);
  - a parameter whose `.grad` is None is skipped: its weights and state stay as they are (no
    moment decay, no weight decay) and its own step count, which bias corrections read, stays;
  - `opt.state[p]` holds p's state buffers as float32 tensors that view the compiled state
    (zero-copy; keys as the library names them, e.g. "adam.m" and "adam.v" for AdamW);
  - `state_dict()` is torch's layout: "state" keyed by parameter index, each with its own
    "step" and its buffers as tensors, "param_groups" with "params" indices; plus, under
    "steepest", each group's checkpoint header. `load_state_dict()` rebuilds the library's
    checkpoint from them and loads it with every check the library's loader makes, so a
    `torch.save` / `torch.load` round trip continues bit for bit;
  - gradients may be float32 or bfloat16 (one dtype per group and step; bf16 is widened
    exactly as it is read, so a bf16 gradient steps as its float32 value would);
  - a tensor that is not float32 (a gradient: or bfloat16), not contiguous, sparse or complex,
    or not on its group's device, is refused with its name before anything changes;
  - CUDA tensors (a build with nvcc: `steepest.has_cuda`): a group's tensors are all on its
    first tensor's GPU; its state is allocated there at construction, and each step is
    enqueued on torch's current stream of that GPU (ordered after the backward pass that wrote
    the gradients, with no host synchronization, except one 4-byte read when on_non_finite is
    "error" or "skip"). opt.state[p] views the device buffers.
Roles (hidden matrices, embeddings, the output head, vectors) pick each tensor's geometry and,
for the Muon family, its route: from a module they are inferred as the libtorch adapter does
(`infer_roles`); from plain tensors, 2-D and larger are hidden, the rest vectors; a group may
say `role` for all of its tensors, and `roles={"glob": "role"}` overrides by name.
"""
import fnmatch
import json
import struct

import torch

from . import _core

ROLES = ("hidden", "embedding", "output", "vector")
OUTPUT_NAMES = ("*head.weight", "*lm_head.weight", "*output.weight", "*classifier.weight")


def infer_roles(model, roles=None, output_names=OUTPUT_NAMES):
    """[(name, parameter, role)] for every trainable parameter of `model`: an Embedding's weight
    is "embedding"; the model's last Linear when its out_features equals an Embedding's
    vocabulary (only the last: a position table as long as the width must not make every
    width-out projection a head), or a Linear whose name matches `output_names`, is "output";
    other tensors of 2 or more dimensions are "hidden"; the rest "vector". `roles` ({glob:
    role}) overrides, last."""
    embeddings, vocab, last = set(), set(), None
    for mname, m in model.named_modules():
        prefix = mname + "." if mname else ""
        if isinstance(m, torch.nn.Embedding):
            embeddings.add(prefix + "weight")
            vocab.add(m.num_embeddings)
        elif isinstance(m, torch.nn.Linear):
            last = (prefix + "weight", m.out_features)
    head = last[0] if last and last[1] in vocab else None
    out = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        role = "hidden" if p.dim() >= 2 else "vector"
        if name in embeddings:
            role = "embedding"
        elif name == head or (role == "hidden" and any(fnmatch.fnmatchcase(name, g) for g in output_names)):
            role = "output"
        for glob, r in (roles or {}).items():
            if fnmatch.fnmatchcase(name, glob):
                role = r
        out.append((name, p, role))
    return out


def _check_tensor(t, name, what, device, dtypes=(torch.float32,)):
    if t.is_sparse or t.layout != torch.strided:
        raise ValueError("steepest: %s of '%s' is sparse; steepest steps dense tensors" % (what, name))
    if t.is_complex() or t.dtype not in dtypes:
        raise TypeError("steepest: %s of '%s' is %s; it must be %s" % (
            what, name, t.dtype, " or ".join(str(d) for d in dtypes)))
    if t.device.type not in ("cpu", "cuda"):
        raise ValueError("steepest: %s of '%s' is on %s; steepest steps CPU and CUDA tensors" % (what, name, t.device))
    if t.device.type == "cuda" and not _core.has_cuda:
        raise ValueError("steepest: %s of '%s' is on %s; this build of steepest has no CUDA support (nvcc was not "
                         "found when it was built: reinstall with nvcc on the PATH)" % (what, name, t.device))
    if t.device != device:
        raise ValueError("steepest: %s of '%s' is on %s; its group's tensors are on %s (the group's first tensor's "
                         "device)" % (what, name, t.device, device))
    if not t.is_contiguous():
        raise ValueError("steepest: %s of '%s' is not contiguous" % (what, name))


def _addresses_and_shapes(tensors):
    return [t.data_ptr() for t in tensors], [list(t.shape) for t in tensors]


# The shape factor of a kind's polar factor when none is given: the C++ named optimizer's default
# (st::muon, st::muon_eq, st::muon_scion: sqrt(max(1, m/n)); st::muon_plus: 0.2 sqrt(max(m, n))).
DEFAULT_SHAPE_FACTOR = {"muon": "muon", "muon_eq": "muon", "muon_scion": "muon", "muon_plus": "match_adamw"}


class SteepestOptimizer(torch.optim.Optimizer):
    """A named optimizer of the library (`kind`: "adamw", "moga_row", "muon", ...) over torch
    parameters. `params`: a module (roles inferred), or what torch optimizers take (tensors,
    (name, tensor) pairs, or group dicts, which may hold `role` and `names`). For the Muon
    family, `adamw_lr`, `adamw_betas`, `adamw_eps` and `adamw_weight_decay` set the AdamW route
    (embeddings, head, vectors). `shape_factor` scales polar factors ("muon": sqrt(max(1, m/n)),
    "match_adamw": 0.2 sqrt(max(m, n)), "spectral_mup", "none"); left out, it is the kind's own
    (DEFAULT_SHAPE_FACTOR, as in C++).

    Composing from Python: a group may name its own `kind` (each group is its own compiled
    optimizer, so groups route tensors between rules), and `geometry` picks the norm of the
    kinds that apply one (sign_descent, muon_scion, scion, scion_unconstrained, the Muon
    family): a name for every tensor ("row", "mean_spectral", ...: steepest.GEOMETRIES, with
    "mean_" for the width-aware p̄ -> q̄ version), or {role or name glob: name}.

        # Muon's chain (Nesterov EMA, dualize, scales, step) in the 2̄ -> inf geometry
        SteepestOptimizer(model, "muon_scion", lr=0.02, geometry={"hidden": "mean_row"})
        # MOGA-row on the matrices, AdamW on the rest, one optimizer
        SteepestOptimizer([{"params": mats, "kind": "moga_row", "lr": 0.03},
                           {"params": rest, "kind": "adamw"}], "adamw", lr=3e-3)
    """

    def __init__(self, params, kind, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 shape_factor=None, on_non_finite="error", roles=None, adamw_lr=1e-3,
                 adamw_betas=(0.9, 0.999), adamw_eps=1e-8, adamw_weight_decay=0.0, geometry=None):
        if not lr > 0:
            raise ValueError("steepest: lr must be > 0 (a schedule scales it from there)")
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
        self._devices = []  # each group's device: its first tensor's
        self._hyper_cache = {}  # id(group) -> (values, Hyper, AdamW Hyper)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        shape_factor=shape_factor, on_non_finite=on_non_finite, adamw_lr=adamw_lr,
                        adamw_betas=tuple(adamw_betas), adamw_eps=adamw_eps,
                        adamw_weight_decay=adamw_weight_decay, kind=kind, geometry=geometry)
        super().__init__(params, defaults)

    # ---- groups ----------------------------------------------------------------------------
    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group.setdefault("initial_lr", group["lr"])
        if group["shape_factor"] is None:  # the kind's own, as its C++ named optimizer has it
            group["shape_factor"] = DEFAULT_SHAPE_FACTOR.get(group["kind"], "none")
        names, roles, geometries = [], [], []
        given = group.get("names")
        wanted = group["geometry"]
        device = group["params"][0].device if group["params"] else torch.device("cpu")
        for i, p in enumerate(group["params"]):
            name = given[i] if given else self._names.get(id(p), "group%d.param%d" % (len(self.param_groups) - 1, i))
            role = group.get("role") or self._roles.get(id(p)) or ("hidden" if p.dim() >= 2 else "vector")
            for glob, r in self._overrides.items():
                if fnmatch.fnmatchcase(name, glob):
                    role = r
            if role not in ROLES:
                raise ValueError("steepest: role '%s' of '%s' is not one of %s" % (role, name, ROLES))
            _check_tensor(p, name, "the parameter", device)
            geometry = ""
            if isinstance(wanted, str):
                geometry = wanted
            elif wanted:
                for key, g in wanted.items():  # a role, or a glob on the name; the last match wins
                    if key == role or fnmatch.fnmatchcase(name, key):
                        geometry = g
            names.append(name)
            roles.append(role)
            geometries.append(geometry)
        group["names"], group["roles"] = names, roles
        hp, adamw_hp = self._hyper(group, ""), self._hyper(group, "adamw_")
        if device.type == "cuda":
            addresses, shapes = _addresses_and_shapes(group["params"])
            stream = torch.cuda.current_stream(device).cuda_stream
            core = _core.make_cuda(group["kind"], hp, adamw_hp, names, roles, addresses, shapes, geometries,
                                   device.index, stream)
        else:
            core = _core.make(group["kind"], hp, adamw_hp, names, roles, [p.detach() for p in group["params"]],
                              geometries)
        self._cores.append(core)
        self._devices.append(device)
        self._expose_state(len(self._cores) - 1)

    def _expose_state(self, gi):
        """opt.state[p] for the group's tensors: views of the compiled state's buffers."""
        core = self._cores[gi]
        for i, p in enumerate(self.param_groups[gi]["params"]):
            _, bufs = core.layer_state(i)
            self.state[p] = {key: torch.from_dlpack(view) for key, view in bufs}

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

    def _hypers(self, group):
        """(lr factor, Hyper, AdamW route's Hyper) of a group, the two Hyper objects made again
        only when one of their values changed (a scheduler changes "lr", which is the factor)."""
        key = (group["initial_lr"], group["betas"], group["eps"], group["weight_decay"], group["shape_factor"],
               group["on_non_finite"], group["adamw_lr"], group["adamw_betas"], group["adamw_eps"],
               group["adamw_weight_decay"])
        cached = self._hyper_cache.get(id(group))
        if cached is None or cached[0] != key:
            cached = (key, self._hyper(group, ""), self._hyper(group, "adamw_"))
            self._hyper_cache[id(group)] = cached
        return group["lr"] / group["initial_lr"], cached[1], cached[2]

    def _check_groups(self, indices):
        """_check_tensor on every parameter and gradient of the groups `indices`."""
        for gi in indices:
            group, device = self.param_groups[gi], self._devices[gi]
            for p, name in zip(group["params"], group["names"]):
                _check_tensor(p, name, "the parameter", device)
                if p.grad is not None:
                    _check_tensor(p.grad, name, "the gradient", device, (torch.float32, torch.bfloat16))

    # ---- the step ----------------------------------------------------------------------------
    def step(self, closure=None):
        """One step of every group (after `closure()`, when given, re-evaluates the loss). Every
        tensor is checked before any group is stepped: the compiled core refuses a tensor of
        another dtype, device or layout before it steps, and the named message comes from
        _check_tensor then.

        What crosses per step: the parameter list (and, for CUDA tensors, torch's current
        stream). The core calls torch's own methods on each tensor (data_ptr, .grad, .dtype,
        is_contiguous) from C++; when a parameter's storage moved (`p.data = ...`), the group's
        tensors are checked here and the core takes the new addresses. Nothing here records
        autograd history (the core writes the parameters' memory), so no no_grad() is entered."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if len(self.param_groups) > 1:  # a later group's refusal must not follow an earlier group's step
            self._check_groups(range(len(self.param_groups)))
        for gi, (group, core) in enumerate(zip(self.param_groups, self._cores)):
            params = group["params"]
            hyper = self._hypers(group)
            try:
                if core.device >= 0:
                    core.use_stream(torch.cuda.current_stream(self._devices[gi]).cuda_stream)
                if core.step_tensors(params, torch.float32, torch.bfloat16, *hyper) is None:  # a storage moved
                    self._check_groups([gi])
                    core.rebind(*_addresses_and_shapes(params))
                    core.step_tensors(params, torch.float32, torch.bfloat16, *hyper)
            except (TypeError, RuntimeError):
                # nothing was stepped: name the tensor refused
                self._check_groups([gi])
                raise
        return loss

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self):
        """torch's layout: {"state": {index: {"step": own count, key: buffer}}, "param_groups":
        [... "params": [indices]]}, plus "steepest": each group's checkpoint header (its
        metadata: optimizer, layers, routes, global step). The buffers are the live state, as in
        torch's own optimizers: torch.save copies them, a caller that keeps the dict should too."""
        sd = super().state_dict()
        state, index = {}, 0
        headers = []
        for gi, (group, core) in enumerate(zip(self.param_groups, self._cores)):
            for i, p in enumerate(group["params"]):
                own, _ = core.layer_state(i)
                entry = dict(self.state[p])
                entry["step"] = torch.tensor(float(own))
                state[index] = entry
                index += 1
            headers.append(_header_of(core.save_bytes()))
        sd["state"] = state
        sd["steepest"] = headers
        return sd

    def load_state_dict(self, state_dict):
        """Loads a dict that state_dict() made (after torch.save / torch.load, or edited): each
        group's checkpoint is rebuilt from "steepest" and the tensors, and the library's loader
        checks it (layers, shapes, value domains, step counts) before anything changes."""
        headers = state_dict.get("steepest")
        if not isinstance(headers, list) or len(headers) != len(self._cores):
            raise ValueError("steepest: this state_dict has no steepest state for %d groups (saved by "
                             "another optimizer?)" % len(self._cores))
        groups = state_dict.get("param_groups", [])
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            raise ValueError("steepest: the state_dict's parameter groups do not match this optimizer's")
        files, index = [], 0
        for group, header in zip(self.param_groups, headers):
            entries = []
            for name in group["names"]:
                saved = state_dict["state"].get(index)
                if saved is None:
                    raise ValueError("steepest: the state_dict has no state for parameter %d ('%s')" % (index, name))
                entries.append((name, saved))
                index += 1
            files.append(_checkpoint_of(header, entries))
        for core, f in zip(self._cores, files):  # every file built before any core loads
            core.load_bytes(f)
        rest = dict(state_dict)
        rest["state"] = {}
        rest.pop("steepest")
        views = self.state
        super().load_state_dict(rest)  # param_groups (lr, betas, ...); our state is loaded above
        self.state = views

    def operator_norms(self):
        """[(name, geometry, ||W||)] for every tensor, each in its geometry."""
        return [n for core in self._cores for n in core.operator_norms()]


def _header_of(file):
    """The JSON header of a checkpoint (its bytes) as a dict."""
    (n,) = struct.unpack_from("<Q", file, 0)
    return json.loads(bytes(file[8:8 + n]).decode("utf-8"))


def _checkpoint_of(header, entries):
    """A checkpoint's bytes (a uint8 tensor) from a header that _header_of read and, per layer
    in order, (name, {"step": own count, key: tensor}). The per-layer skipped counts are set
    from the own counts; the crc32 field is dropped (the format allows it), since the tensors
    may have been edited or moved; every value is then checked by the loader."""
    meta = dict(header["__metadata__"])
    meta.pop("crc32", None)
    step = int(meta["step"])
    layers = json.loads(meta["layers"])
    if len(layers) != len(entries):
        raise ValueError("steepest: the state_dict holds %d tensors' state, its header %d" % (len(entries), len(layers)))
    out, parts, offset = {"__metadata__": meta}, [], 0
    for layer, (name, saved) in zip(layers, entries):
        if layer["name"] != name:
            raise ValueError("steepest: state of '%s' found where '%s' was saved" % (name, layer["name"]))
        own = saved.get("step")
        own = step if own is None else int(torch.as_tensor(own).item())
        layer.pop("skipped", None)
        if own != step:
            layer["skipped"] = str(step - own)  # a negative count is refused by the loader
        for key in layer["buffers"]:
            t = saved.get(key)
            if not isinstance(t, torch.Tensor):
                raise ValueError("steepest: the state of '%s' has no tensor '%s'" % (name, key))
            old = header[name + "/" + key]
            if t.dtype != torch.float32 or list(t.shape) != old["shape"]:
                raise ValueError("steepest: '%s' of '%s' is %s %s, the optimizer's is float32 %s"
                                 % (key, name, t.dtype, list(t.shape), old["shape"]))
            data = t.detach().to("cpu").contiguous().view(torch.uint8).reshape(-1)
            out[name + "/" + key] = {"dtype": "F32", "shape": old["shape"],
                                     "data_offsets": [offset, offset + data.numel()]}
            parts.append(data)
            offset += data.numel()
    meta["layers"] = json.dumps(layers, separators=(",", ":"))
    text = json.dumps(out, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    prefix = torch.frombuffer(bytearray(struct.pack("<Q", len(text)) + text), dtype=torch.uint8)
    return torch.cat([prefix] + parts)


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


class MuonScion(SteepestOptimizer):
    """Muon's chain (Nesterov EMA, dualize, width and shape scales, step) on every tensor, each
    in its role's geometry: spectral on hidden matrices, mean columns on embeddings, mean sign on
    the head, RMS on vectors; `geometry` recomposes it in any other."""
    __init__ = _named("muon_scion", betas=(0.95, 0.95), shape_factor="muon")


class Scion(SteepestOptimizer):
    """Scion: momentum, per-role LMO with radii, constrained step."""
    __init__ = _named("scion", betas=(0.9, 0.999))

