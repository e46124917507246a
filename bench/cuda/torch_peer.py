#!/usr/bin/env python3
"""PyTorch peer for steepest_cuda_bench's GPT-2-small rows (run on the same GPU machine).

Times one optimizer step (CUDA events, median of 20 after 3 warm-ups) of
  torch.optim.AdamW(fused=True) over GPT-2 small's 124M parameters, and
  torch.optim.Muon over its 48 hidden matrices (PyTorch >= 2.9), and
  a hand-batched Muon step in plain torch: same-shape matrices stacked, quintic Newton-Schulz
  with torch.bmm in bf16 (the way fast training scripts write it), fp32 momentum and weights,
with the same shapes steepest_cuda_bench uses. Needs torch with CUDA; a reference only, not a
dependency of the library or its tests.
"""
import torch


def median_ms(fn):
    for _ in range(3):
        fn()
    times = []
    for _ in range(20):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def params(shapes):
    ps = [torch.nn.Parameter(torch.zeros(m, n, device="cuda") if n > 1 else torch.zeros(m, device="cuda"))
          for m, n in shapes]
    for p in ps:
        p.grad = torch.randn_like(p)
    return ps


hidden, other = [], []
for _ in range(12):
    hidden += [(2304, 768), (768, 768), (3072, 768), (768, 3072)]
    other += [(2304, 1), (768, 1), (3072, 1), (768, 1), (768, 1), (768, 1), (768, 1), (768, 1)]
other += [(50257, 768), (1024, 768), (768, 1), (768, 1)]

print("device:", torch.cuda.get_device_name())
everything = params(hidden + other)
adam = torch.optim.AdamW(everything, lr=1e-3, fused=True)
n = sum(p.numel() for p in everything)
ms = median_ms(adam.step)
print(f"torch AdamW(fused=True), {n / 1e6:.1f}M parameters: {ms:.3f} ms ({28 * n / (ms * 1e6):.0f} GB/s)")
if hasattr(torch.optim, "Muon"):
    hid = params(hidden)
    muon = torch.optim.Muon(hid, lr=0.02, momentum=0.95)
    print(f"torch Muon, {sum(p.numel() for p in hid) / 1e6:.1f}M hidden parameters: {median_ms(muon.step):.3f} ms")
else:
    print("torch.optim.Muon not available in this torch version")


def batched_muon_step(groups, lr=0.02, beta=0.95, wd=0.0):
    """One Muon step over stacked same-shape groups: (weights, grads, momenta), each [b, m, n]."""
    a, b, c = 3.4445, -4.7750, 2.0315
    for w, g, m in groups:
        m.lerp_(g, 1 - beta)
        u = g.lerp(m, beta)
        x = u.bfloat16()
        tall = x.size(-2) > x.size(-1)
        if tall:
            x = x.mT
        x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
        for _ in range(5):
            A = torch.bmm(x, x.mT)
            B = b * A + c * torch.bmm(A, A)
            x = a * x + torch.bmm(B, x)
        if tall:
            x = x.mT
        scale = max(1.0, w.size(-2) / w.size(-1)) ** 0.5
        w.mul_(1 - lr * wd).add_(x.float(), alpha=-lr * scale)


shapes = sorted(set(hidden))
groups = []
for shp in shapes:
    count = hidden.count(shp)
    groups.append((torch.zeros(count, *shp, device="cuda"), torch.randn(count, *shp, device="cuda"),
                   torch.zeros(count, *shp, device="cuda")))
print(f"hand-batched torch Muon (bf16 bmm Newton-Schulz, {len(groups)} shape groups): "
      f"{median_ms(lambda: batched_muon_step(groups)):.3f} ms")
