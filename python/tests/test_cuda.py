"""steepest.torch on CUDA tensors: against the same optimizer on CPU tensors and against torch.

Run where the package was built with nvcc (steepest.has_cuda) and torch sees a GPU; elsewhere
the GPU tests report skipped. Without a GPU, one test checks that a CUDA optimizer is refused
with an error rather than a crash.
"""
import io
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
stt = pytest.importorskip("steepest.torch")
import steepest  # noqa: E402
from steepest import _core  # noqa: E402

has_gpu = steepest.has_cuda and torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not has_gpu, reason="needs a CUDA build of steepest and a GPU that torch sees")

SHAPES = [(48, 32), (32, 48), (32,), (10, 4, 3)]


def model_on(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter((0.1 * torch.randn(*s, generator=g)).to(device)) for s in SHAPES]


def grads_for(step, dtype=torch.float32):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(*s, generator=g).to(dtype) for s in SHAPES]


def run(kind, device, steps=3, dtype=torch.float32, **kw):
    params = model_on(device)
    opt = stt.SteepestOptimizer(params, kind, **kw)
    for t in range(steps):
        for p, g in zip(params, grads_for(t, dtype)):
            p.grad = g.to(device)
        opt.step()
    return [p.detach().cpu() for p in params], opt


@pytest.mark.skipif(has_gpu or not steepest.has_cuda, reason="for a CUDA build on a machine without a GPU")
def test_without_a_gpu_a_cuda_optimizer_is_an_error_not_a_crash():
    with pytest.raises(RuntimeError, match="cuda"):
        _core.make_cuda("adamw", _core.Hyper(), _core.Hyper(), ["w"], ["hidden"], [0], [[2, 2]], [], 0, 0)


# (kind, keyword arguments, tolerance on the update relative to its size). The elementwise and
# row / column rules run the same per-element code on both sides; Muon's Newton-Schulz runs TF32
# products on the GPU (the context's default) against fp32 on the CPU.
RULES = [
    ("adamw", dict(lr=1e-2, weight_decay=0.1), 1e-5),
    ("lion", dict(lr=1e-3, betas=(0.9, 0.99)), 1e-5),
    ("moga_row", dict(lr=1e-2), 1e-5),
    ("moga_col", dict(lr=1e-2), 1e-5),
    ("muon", dict(lr=2e-2, betas=(0.95, 0.95), shape_factor="muon"), 2e-2),
    ("scion", dict(lr=1e-2, betas=(0.9, 0.999)), 2e-2),
]


@needs_gpu
@pytest.mark.parametrize("kind,kw,tol", RULES, ids=[r[0] for r in RULES])
def test_cuda_steps_as_the_cpu_does(kind, kw, tol):
    w0 = [p.detach() for p in model_on("cpu")]
    cpu, _ = run(kind, "cpu", **kw)
    gpu, opt = run(kind, "cuda", **kw)
    for a, b, w in zip(gpu, cpu, w0):
        assert float((a - b).norm() / (b - w).norm()) < tol
    assert all(v.is_cuda for p in opt.state for v in opt.state[p].values())


@needs_gpu
def test_cuda_adamw_matches_torch_adamw():
    kw = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    ours, _ = run("adamw", "cuda", **kw)
    params = model_on("cuda")
    ref = torch.optim.AdamW(params, **kw)
    for t in range(3):
        for p, g in zip(params, grads_for(t)):
            p.grad = g.cuda()
        ref.step()
    for a, b in zip(ours, params):
        assert float((a - b.detach().cpu()).abs().max()) < 1e-6


@needs_gpu
def test_cuda_bf16_gradients_step_as_their_float32_values():
    ours, _ = run("moga_row", "cuda", dtype=torch.bfloat16, lr=1e-2)
    widened = model_on("cuda")
    opt = stt.SteepestOptimizer(widened, "moga_row", lr=1e-2)
    for t in range(3):
        for p, g in zip(widened, grads_for(t, torch.bfloat16)):
            p.grad = g.to(torch.float32).cuda()
        opt.step()
    for a, b in zip(ours, widened):
        assert torch.equal(a, b.detach().cpu())


@needs_gpu
def test_cuda_state_dict_round_trip_continues_bitwise_and_loads_on_the_cpu():
    params = model_on("cuda")
    opt = stt.AdamW(params, lr=1e-2)
    for t in range(2):
        for p, g in zip(params, grads_for(t)):
            p.grad = g.cuda()
        opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    twin = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = stt.AdamW(twin, lr=1e-2)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf))
    on_cpu = [torch.nn.Parameter(p.detach().cpu()) for p in params]
    opt3 = stt.AdamW(on_cpu, lr=1e-2)
    buf.seek(0)
    opt3.load_state_dict(torch.load(buf))
    for group in (params, twin, on_cpu):
        for p, g in zip(group, grads_for(2)):
            p.grad = g.to(p.device)
    opt.step(), opt2.step(), opt3.step()
    for a, b, c in zip(params, twin, on_cpu):
        assert torch.equal(a.detach(), b.detach())
        assert float((a.detach().cpu() - c.detach()).abs().max()) < 1e-6


@needs_gpu
def test_cuda_none_gradients_are_skipped():
    params = model_on("cuda")
    opt = stt.AdamW(params, lr=1e-2, weight_decay=0.1)
    for p, g in zip(params, grads_for(0)):
        p.grad = g.cuda()
    opt.step()
    before = params[1].detach().clone()
    state = {k: v.clone() for k, v in opt.state[params[1]].items()}
    params[1].grad = None
    for p, g in zip([params[0]] + params[2:], [grads_for(1)[0]] + grads_for(1)[2:]):
        p.grad = g.cuda()
    opt.step()
    assert torch.equal(params[1].detach(), before)
    for k, v in state.items():
        assert torch.equal(opt.state[params[1]][k], v)


@needs_gpu
def test_cuda_bad_tensors_are_refused_with_their_names():
    params = model_on("cuda")
    with pytest.raises(ValueError, match="on cpu"):
        stt.AdamW([("w", params[0]), ("cpu_bias", torch.nn.Parameter(torch.zeros(3)))])
    opt = stt.AdamW([("w", params[0])], lr=1e-2)
    before = params[0].detach().clone()
    params[0].grad = torch.zeros(32, 48, device="cuda").t()  # the right shape, not contiguous
    with pytest.raises(ValueError, match="'w' is not contiguous"):
        opt.step()
    assert torch.equal(params[0].detach(), before)


@needs_gpu
def test_cuda_steps_follow_torch_current_stream():
    reference, _ = run("moga_row", "cuda", lr=1e-2)
    side = torch.cuda.Stream()
    params = model_on("cuda")
    opt = stt.MOGARow(params, lr=1e-2)
    for t in range(3):
        with torch.cuda.stream(side):
            for p, g in zip(params, grads_for(t)):
                p.grad = g.cuda()
            opt.step()  # enqueued on `side`, after the gradients' copies
    side.synchronize()
    for a, b in zip(params, reference):
        assert torch.equal(a.detach().cpu(), b)


@needs_gpu
@pytest.mark.parametrize("rule", ["adamw", "muon"])
def test_the_gpt_example_runs_on_cuda(rule):
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    out = subprocess.run([sys.executable, os.path.join(root, "examples", "python", "gpt.py"), "--optimizer", rule,
                          "--steps", "30", "--device", "cuda"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "validation" in out.stdout
