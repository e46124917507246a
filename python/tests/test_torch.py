"""steepest.torch against torch's own optimizers and against the C++ library.

Run with pytest in a Python where the package is installed (`pip install .`) beside torch:
    python -m pytest python/tests
STEEPEST_CONVENTION_FIXTURE, when set, is tests/convention_fixture (built by CMake): the C++
library stepping the same weights with the same gradients, for the same-bits check.
"""
import math
import os
import subprocess

import pytest

torch = pytest.importorskip("torch")
stt = pytest.importorskip("steepest.torch")
import steepest  # noqa: E402


def grad_at(size, t, salt):
    """tests/optim_helpers.hpp's grad_at: full rank, different at every step (float64, then float32)."""
    return torch.tensor([math.sin(0.37 * i * i + 1.3 * t + salt) + 0.1 * t for i in range(size)],
                        dtype=torch.float64).to(torch.float32)


def weights(rows, cols):
    return torch.tensor([0.05 * math.sin(i + 1.0) for i in range(rows * cols)], dtype=torch.float32).reshape(rows, cols)


def run(make, rows, cols, steps, scheduler=None):
    w = torch.nn.Parameter(weights(rows, cols))
    opt = make([w])
    sched = scheduler(opt) if scheduler else None
    for t in range(1, steps + 1):
        w.grad = grad_at(rows * cols, t, 0.5).reshape(rows, cols)
        opt.step()
        if sched:
            sched.step()
    return w.detach().clone()


def rel(a, b, w0):  # the two updates' difference, relative to the update's size
    return float((a - b).norm() / (b - w0).norm())


@pytest.mark.parametrize("shape", [(12, 7), (7, 12)])
def test_adamw_matches_torch(shape):
    kw = dict(lr=0.02, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    ours = run(lambda p: stt.AdamW(p, **kw), *shape, 5)
    ref = run(lambda p: torch.optim.AdamW(p, **kw), *shape, 5)
    assert rel(ours, ref, weights(*shape)) < 1e-5


def test_scheduler_changes_lr_between_steps():
    kw = dict(lr=0.02, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    sched = lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.3)  # noqa: E731
    ours = run(lambda p: stt.AdamW(p, **kw), 9, 5, 6, sched)
    ref = run(lambda p: torch.optim.AdamW(p, **kw), 9, 5, 6, sched)
    flat = run(lambda p: stt.AdamW(p, **kw), 9, 5, 6)
    w0 = weights(9, 5)
    assert rel(ours, ref, w0) < 1e-5
    assert rel(flat, ref, w0) > 1e-2  # the schedule was applied, not ignored


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="needs torch.optim.Muon (PyTorch >= 2.9)")
@pytest.mark.parametrize("shape", [(12, 7), (7, 12)])
def test_muon_matches_torch_with_fp32_newton_schulz(shape, monkeypatch):
    import torch.optim._muon as muon_module
    stock = muon_module._zeropower_via_newtonschulz

    def float32_ns(grad, ns_coefficients, ns_steps, eps):  # torch's iteration, float32 products
        real = torch.bfloat16
        try:
            torch.bfloat16 = torch.float32
            return stock(grad, ns_coefficients, ns_steps, eps)
        finally:
            torch.bfloat16 = real

    monkeypatch.setattr(muon_module, "_zeropower_via_newtonschulz", float32_ns)
    ref = run(lambda p: torch.optim.Muon(p, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True,
                                         adjust_lr_fn="original"), *shape, 5)
    ours = run(lambda p: stt.Muon(p, lr=0.02, weight_decay=0.1, betas=(0.95, 0.95)), *shape, 5)
    assert rel(ours, ref, weights(*shape)) < 1e-4


FIXTURE = os.environ.get("STEEPEST_CONVENTION_FIXTURE")


@pytest.mark.skipif(not FIXTURE, reason="STEEPEST_CONVENTION_FIXTURE (tests/convention_fixture) not given")
@pytest.mark.parametrize("rule", ["adamw", "muon"])
def test_same_bits_as_the_cpp_library(rule):
    rows, cols, steps = 12, 7, 5
    args = [FIXTURE, rule, str(rows), str(cols), str(steps)] + (["original"] if rule == "muon" else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    lib = torch.tensor([float(x) for x in out], dtype=torch.float32).reshape(rows, cols)
    if rule == "adamw":
        make = lambda p: stt.AdamW(p, lr=0.02, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)  # noqa: E731
    else:
        make = lambda p: stt.Muon(p, lr=0.02, weight_decay=0.1, betas=(0.95, 0.999))  # noqa: E731
    assert torch.equal(run(make, rows, cols, steps), lib)


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(11, 8), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                               torch.nn.Linear(8, 11))


def train(m, opt, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randint(0, 11, (16,), generator=g)
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(m(x), x)
        loss.backward()
        opt.step()
    return loss.item()


def test_roles_from_a_module():
    roles = {name: role for name, _, role in stt.infer_roles(model())}
    assert roles == {"0.weight": "embedding", "1.weight": "hidden", "1.bias": "vector",
                     "3.weight": "output", "3.bias": "vector"}
    # A position table as long as the width: only the last Linear can be the vocabulary's head.
    net = torch.nn.ModuleDict({"tok": torch.nn.Embedding(10, 8), "pos": torch.nn.Embedding(8, 8),
                               "up": torch.nn.Linear(8, 32), "down": torch.nn.Linear(32, 8),
                               "unembed": torch.nn.Linear(8, 10)})
    roles = {name: role for name, _, role in stt.infer_roles(net)}
    assert roles["down.weight"] == "hidden" and roles["unembed.weight"] == "output"


@pytest.mark.parametrize("cls", [stt.AdamW, stt.MOGARow, stt.Muon, stt.Scion])
def test_state_dict_round_trip_continues_bitwise(cls):
    a = model()
    oa = cls(a, lr=0.01)
    train(a, oa, 3)
    sd = oa.state_dict()
    b = model()
    b.load_state_dict(a.state_dict())
    ob = cls(b, lr=0.01)
    ob.load_state_dict(sd)
    train(a, oa, 3, seed=2)
    train(b, ob, 3, seed=2)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_training_lowers_the_loss():
    m = model()
    first = train(m, stt.MOGARow(m, lr=0.05), 1)
    last = train(m, stt.MOGARow(m, lr=0.05), 60)
    assert last < 0.5 * first


def test_bad_tensors_are_refused_before_anything_changes():
    w = torch.nn.Parameter(torch.ones(4, 3))
    b = torch.nn.Parameter(torch.ones(3))
    opt = stt.AdamW([("w", w), ("b", b)], lr=0.1)
    w.grad = torch.ones(4, 3)
    b.grad = torch.ones(6)[::2]  # not contiguous (torch itself refuses a gradient of another dtype)
    with pytest.raises(ValueError, match="'b'.*contiguous"):
        opt.step()
    assert torch.equal(w.detach(), torch.ones(4, 3))  # nothing was stepped
    b.grad = torch.ones(3).to_sparse()
    with pytest.raises(ValueError, match="'b'.*sparse"):
        opt.step()
    assert torch.equal(w.detach(), torch.ones(4, 3))
    with pytest.raises(TypeError, match="float32"):
        stt.AdamW([torch.nn.Parameter(torch.ones(2, 2, dtype=torch.float64))])


def test_a_parameter_whose_storage_moved_is_followed():
    w = torch.nn.Parameter(torch.ones(4, 3))
    opt = stt.SteepestOptimizer([w], "sgd", lr=0.5, betas=(0.0, 0.0))
    w.grad = torch.full((4, 3), 2.0)
    opt.step()
    w.data = torch.full((4, 3), 5.0)  # new storage
    opt.step()
    assert torch.equal(w.detach(), torch.full((4, 3), 4.0))  # 5 - 0.5 * 2


def test_a_tensor_subclass_and_a_patched_type_are_read_as_python_reads_them():
    # The core calls torch's methods through descriptors it looks up once per type: a
    # subclass's own Python property must still be what is read, and so must a property patched
    # onto the type after the first step.
    class Frozen(torch.nn.Parameter):
        pass

    w = Frozen(torch.ones(2, 3))
    opt = stt.SteepestOptimizer([w], "sgd", lr=0.5, betas=(0.0, 0.0))
    w.grad = torch.full((2, 3), 2.0)
    opt.step()
    assert torch.equal(w.detach(), torch.zeros(2, 3))
    Frozen.grad = property(lambda self: None)  # from now on, w reports no gradient
    try:
        opt.step()
        assert torch.equal(w.detach(), torch.zeros(2, 3))
    finally:
        del Frozen.grad
    opt.step()  # torch's own .grad again
    assert torch.equal(w.detach(), torch.full((2, 3), -1.0))


def test_groups_are_all_checked_before_any_is_stepped():
    a = torch.nn.Parameter(torch.ones(2, 2))
    b = torch.nn.Parameter(torch.ones(2, 2))
    opt = stt.AdamW([{"params": [a]}, {"params": [b], "names": ["b"]}], lr=0.1)
    a.grad = torch.ones(2, 2)
    b.grad = torch.ones(4, 2)[::2]
    with pytest.raises(ValueError, match="'b'.*contiguous"):
        opt.step()
    assert torch.equal(a.detach(), torch.ones(2, 2))


def test_non_finite_gradient_raises_and_changes_nothing():
    w = torch.nn.Parameter(torch.ones(4, 3))
    opt = stt.AdamW([w], lr=0.1)
    w.grad = torch.full((4, 3), float("nan"))
    with pytest.raises(FloatingPointError):
        opt.step()
    assert torch.equal(w.detach(), torch.ones(4, 3))


def test_compiled_model_trains_with_the_optimizer_outside_the_graph():
    m = model()
    cm = torch.compile(m)  # inductor: the forward and backward run as generated kernels
    opt = stt.AdamW(m, lr=0.05)
    first = train(cm, opt, 1)
    last = train(cm, opt, 40)
    assert last < first


def test_save_and_load_files(tmp_path):
    a = model()
    oa = stt.Muon(a, lr=0.02)
    train(a, oa, 2)
    steepest.save(oa, str(tmp_path / "s.safetensors"))
    b = model()
    b.load_state_dict(a.state_dict())
    ob = stt.Muon(b, lr=0.02)
    steepest.load(ob, str(tmp_path / "s.safetensors"))
    train(a, oa, 2, seed=3)
    train(b, ob, 2, seed=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def frozen_run(make, steps=6):
    """A model trained `steps` steps where the embedding has no gradient at steps 2 and 3 and the
    hidden layer none at step 5 (.grad None, as for frozen or unused parameters)."""
    m = model()
    opt = make(m)
    g = torch.Generator().manual_seed(4)
    emb, hid = m[0].weight, m[1].weight
    for t in range(1, steps + 1):
        x = torch.randint(0, 11, (16,), generator=g)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(m(x), x).backward()
        skipped = [p for p, off in ((emb, t in (2, 3)), (hid, t == 5)) if off]
        for p in skipped:
            p.grad = None
        before = [p.detach().clone() for p in skipped]
        state_before = [{k: v.clone() for k, v in opt.state[p].items()} for p in skipped]
        opt.step()
        for p, w, sb in zip(skipped, before, state_before):
            assert torch.equal(p.detach(), w)  # the weights and the state stay as they were
            for k, v in sb.items():
                assert torch.equal(opt.state[p][k], v)
    return m, opt


def test_none_grads_are_skipped_as_torch_adamw_skips_them():
    kw = dict(lr=0.02, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    ours, _ = frozen_run(lambda m: stt.AdamW(m, **kw))
    ref, _ = frozen_run(lambda m: torch.optim.AdamW(m.parameters(), **kw))
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert float((a.detach() - b.detach()).abs().max() / b.detach().abs().max()) < 1e-5  # the own step counts agree too


def test_state_views_are_the_live_state():
    w = torch.nn.Parameter(torch.zeros(3, 2))
    opt = stt.AdamW([w], lr=0.1, betas=(0.9, 0.99))
    assert set(opt.state[w]) == {"adam.m", "adam.v"}
    w.grad = torch.arange(6.0).reshape(3, 2)
    opt.step()
    assert torch.allclose(opt.state[w]["adam.m"], 0.1 * w.grad, rtol=1e-6)  # (1 - beta1) g after one step
    assert torch.allclose(opt.state[w]["adam.v"], 0.01 * w.grad ** 2, rtol=1e-5)  # (1 - beta2) g^2


def test_state_dict_is_torch_layout_and_survives_torch_save():
    import io
    kw = dict(lr=0.02, betas=(0.9, 0.99), weight_decay=0.1)
    a, oa = frozen_run(lambda m: stt.AdamW(m, **kw), steps=4)
    sd = oa.state_dict()
    assert sorted(sd["state"]) == list(range(5)) and sd["param_groups"][0]["params"] == [0, 1, 2, 3, 4]
    assert [int(sd["state"][i]["step"]) for i in range(5)] == [2, 4, 4, 4, 4]  # the embedding skipped 2
    assert sd["state"][1]["adam.m"].shape == (8, 8) and sd["state"][1]["adam.m"].dtype == torch.float32
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    b = model()
    b.load_state_dict(a.state_dict())
    ob = stt.AdamW(b, **kw)
    ob.load_state_dict(loaded)
    assert ob.param_groups[0]["lr"] == 0.02
    g = torch.Generator().manual_seed(9)
    for _ in range(3):
        x = torch.randint(0, 11, (16,), generator=g)
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(m(x), x).backward()
            m[0].weight.grad = None  # still frozen: its own count must have come back too
            o.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_a_bad_state_dict_is_refused_and_changes_nothing():
    a, oa = frozen_run(lambda m: stt.AdamW(m, lr=0.02), steps=3)
    before = {i: {k: v.clone() for k, v in oa.state[p].items()} for i, p in enumerate(a.parameters())}
    good = oa.state_dict()

    def edited(i, key, value):
        sd = {"state": {j: dict(e) for j, e in good["state"].items()}, "param_groups": good["param_groups"],
              "steepest": good["steepest"]}
        sd["state"][i][key] = value
        return sd

    nan_m = good["state"][1]["adam.m"].clone()
    nan_m[0, 0] = float("nan")
    for sd, err in [(edited(1, "adam.m", nan_m), RuntimeError),                    # the loader's value check
                    (edited(1, "adam.v", -good["state"][1]["adam.v"] - 1), RuntimeError),  # negative second moment
                    (edited(0, "step", torch.tensor(7.0)), RuntimeError),      # an own count past the step
                    (edited(1, "adam.m", good["state"][1]["adam.m"].double()), ValueError),
                    (edited(1, "adam.m", good["state"][1]["adam.m"][:4]), ValueError),
                    (torch.optim.AdamW(a.parameters()).state_dict(), ValueError)]:
        with pytest.raises(err):
            oa.load_state_dict(sd)
        for i, p in enumerate(a.parameters()):
            for k, v in before[i].items():
                assert torch.equal(oa.state[p][k], v)


EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "python", "gpt.py")


@pytest.mark.skipif(not any(os.path.isdir(d) for d in ("/usr/share/games/fortunes", "/usr/share/common-licenses")),
                    reason="no default corpus (Debian's fortunes package)")
@pytest.mark.parametrize("rule", ["adamw", "moga_row", "muon", "scion"])
def test_the_gpt_example_runs(rule):
    import sys
    out = subprocess.run([sys.executable, EXAMPLE, "--optimizer", rule, "--steps", "20", "--width", "32",
                          "--layers", "1", "--threads", "1"], capture_output=True, text=True, check=True).stdout
    last = out.strip().splitlines()[-1].split()
    assert last[0] == "validation" and math.isfinite(float(last[1])) and float(last[1]) < 4.5


BF16_GRADS = hasattr(torch.nn.Parameter(torch.ones(1)), "grad_dtype")
needs_grad_dtype = pytest.mark.skipif(not BF16_GRADS, reason="torch without Tensor.grad_dtype refuses a bf16 .grad "
                                      "on a float32 parameter")


def allow_any_grad_dtype(params):
    for p in params:
        p.grad_dtype = None


@needs_grad_dtype
@pytest.mark.parametrize("cls", [stt.AdamW, stt.MOGARow, stt.Muon])
def test_bf16_gradients_step_as_their_float32_values(cls):
    def run_with(cast):
        m = model()
        allow_any_grad_dtype(m.parameters())
        opt = cls(m, lr=0.01)
        g = torch.Generator().manual_seed(5)
        for _ in range(3):
            x = torch.randint(0, 11, (16,), generator=g)
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(m(x), x).backward()
            for p in m.parameters():
                p.grad = cast(p.grad.bfloat16())
            opt.step()
        return [p.detach().clone() for p in m.parameters()]
    # bf16 -> float32 is exact: the bf16 path must give the same bits as its float32 widening.
    for a, b in zip(run_with(lambda g: g), run_with(lambda g: g.float())):
        assert torch.equal(a, b)


@needs_grad_dtype
def test_mixed_or_other_gradient_dtypes_are_refused():
    w = torch.nn.Parameter(torch.ones(4, 3))
    b = torch.nn.Parameter(torch.ones(3))
    allow_any_grad_dtype([w, b])
    opt = stt.AdamW([("w", w), ("b", b)], lr=0.1)
    w.grad, b.grad = torch.ones(4, 3, dtype=torch.bfloat16), torch.ones(3)
    with pytest.raises(TypeError, match="not both"):
        opt.step()
    w.grad = torch.ones(4, 3, dtype=torch.float16)
    with pytest.raises(TypeError, match="'w'.*float16"):
        opt.step()
    assert torch.equal(w.detach(), torch.ones(4, 3)) and torch.equal(b.detach(), torch.ones(3))


def test_geometries_on_tensors_and_operator_norms():
    G = torch.randn(12, 20, generator=torch.Generator().manual_seed(3))
    D = steepest.dualize(G, "row", mean=True)
    assert isinstance(D, torch.Tensor) and D.shape == G.shape
    assert torch.allclose(D, G / G.norm(dim=1, keepdim=True) / 20 ** 0.5, rtol=1e-6)
    assert torch.equal(D, torch.from_numpy(steepest.dualize(G.numpy(), "row", mean=True)))
    # Every layer's reported norm is steepest.norm of its weights in the geometry of that name.
    m = model()
    opt = stt.MOGARow(m, lr=0.01)
    train(m, opt, 2)
    names = {steepest._core.geometry_name(g, mean): (g, mean) for g in steepest.GEOMETRIES for mean in (False, True)}
    params = dict(m.named_parameters())
    checked = 0
    for name, geometry, value in steepest.operator_norms(opt):
        if geometry in names:
            g, mean = names[geometry]
            assert math.isclose(steepest.norm(params[name].detach(), g, mean=mean), value, rel_tol=1e-6)
            checked += 1
    assert checked >= 3  # the hidden matrix, the embedding and the head at least


def test_groups_with_their_own_kinds_are_the_separate_optimizers():
    a, b = model(), model()
    mats_a = [p for p in a.parameters() if p.dim() == 2]
    rest_a = [p for p in a.parameters() if p.dim() < 2]
    routed = stt.SteepestOptimizer([{"params": mats_a, "kind": "moga_row", "lr": 0.03},
                                    {"params": rest_a, "kind": "adamw"}], "adamw", lr=3e-3)
    mats_b = [p for p in b.parameters() if p.dim() == 2]
    rest_b = [p for p in b.parameters() if p.dim() < 2]
    parts = [stt.MOGARow(mats_b, lr=0.03), stt.AdamW(rest_b, lr=3e-3)]

    class Both:
        def zero_grad(self, set_to_none=True):
            for o in parts:
                o.zero_grad(set_to_none=set_to_none)

        def step(self):
            for o in parts:
                o.step()

    train(a, routed, 3)
    train(b, Both(), 3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_a_geometry_recomposes_a_chain():
    W0 = torch.randn(6, 10, generator=torch.Generator().manual_seed(1))
    G = torch.randn(6, 10, generator=torch.Generator().manual_seed(2))
    row = G / G.norm(dim=1, keepdim=True)

    def one_step(kind, **kw):
        w = torch.nn.Parameter(W0.clone())
        opt = stt.SteepestOptimizer([w], kind, lr=0.1, **kw)
        w.grad = G.clone()
        opt.step()
        return w.detach()

    # Sign descent's chain (dualize, step) in the 2 -> inf geometry: W - lr G / ||row||.
    assert torch.allclose(one_step("sign_descent", geometry="row"), W0 - 0.1 * row, atol=1e-6)
    assert torch.allclose(one_step("sign_descent"), W0 - 0.1 * G.sign(), atol=1e-6)  # its own
    # Muon's chain in 2̄ -> inf: the direction of the Nesterov-EMA momentum (a multiple of G at
    # the first step) row-normalized, times the width scale n^-1/2; Muon's shape factor is for
    # polar factors only.
    ours = one_step("muon_scion", betas=(0.95, 0.95), shape_factor="muon", geometry={"hidden": "mean_row"})
    assert torch.allclose(ours, W0 - 0.1 * 10 ** -0.5 * row, atol=1e-6)
    with pytest.raises(ValueError, match="applies no geometry"):
        stt.AdamW([torch.nn.Parameter(W0.clone())], geometry="row")


def test_a_kind_left_without_a_shape_factor_gets_its_cpp_default():
    # A polar factor's shape factor multiplies the whole first step, so a step with the default
    # is the step without one times the C++ default's closed form, on a tall 12 x 3 matrix:
    # Muon and MuonEq sqrt(max(1, m/n)) = 2, Muon+ 0.2 sqrt(max(m, n)) = 0.2 sqrt(12).
    W0 = torch.randn(12, 3, generator=torch.Generator().manual_seed(3))
    G = torch.randn(12, 3, generator=torch.Generator().manual_seed(4))

    def update(kind, **kw):
        w = torch.nn.Parameter(W0.clone())
        opt = stt.SteepestOptimizer([w], kind, lr=0.1, betas=(0.95, 0.95), geometry="spectral_exact", **kw)
        w.grad = G.clone()
        opt.step()
        return W0 - w.detach(), opt.param_groups[0]["shape_factor"]

    for kind, factor, name in (("muon", 2.0, "muon"), ("muon_eq", 2.0, "muon"),
                               ("muon_plus", 0.2 * 12 ** 0.5, "match_adamw")):
        default, chosen = update(kind)
        plain, _ = update(kind, shape_factor="none")
        assert chosen == name
        # W0 - W loses the update's low bits to W0's rounding (updates ~1e-2 on weights ~1)
        assert torch.allclose(default, factor * plain, rtol=0, atol=1e-6), kind
    assert stt.SteepestOptimizer([torch.nn.Parameter(W0.clone())], "adamw").param_groups[0]["shape_factor"] == "none"
    with pytest.raises(ValueError, match="unknown geometry 'rows'"):
        stt.MuonScion([torch.nn.Parameter(W0.clone())], geometry="rows")
