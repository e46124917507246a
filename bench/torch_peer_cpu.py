#!/usr/bin/env python3
"""PyTorch CPU peer for steepest_bench: one optimizer step on one fp32 m x n matrix.

  torch.optim.AdamW(fused=True)   the fused CPU AdamW kernel (28 bytes/param, no finite check)
  torch.optim.Muon                 Newton-Schulz in bf16 (torch's own convention), PyTorch >= 2.9

Usage: torch_peer_cpu.py --shape M N --threads T [--steps K]
Prints one JSON object per rule: {"rule", "m", "n", "threads", "ms"} with the median of K steps
after 2 warm-up steps (time.perf_counter). bench/report.py --torch runs it in turns with
steepest_bench, so both are measured in the same window. A reference only: nothing in the library
or its tests depends on PyTorch.
"""
import argparse
import json
import statistics
import time

import torch


def median_ms(step, steps):
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, nargs=2, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m, n = a.shape
    gen = torch.Generator().manual_seed(0)

    def param():
        p = torch.nn.Parameter(0.02 * (2 * torch.rand(m, n, generator=gen) - 1))
        p.grad = 2 * torch.rand(m, n, generator=gen) - 1
        return p

    adam = torch.optim.AdamW([param()], lr=1e-3, weight_decay=0.1, fused=True)
    print(json.dumps({"rule": "torch.AdamW(fused=True)", "m": m, "n": n, "threads": a.threads,
                      "ms": median_ms(adam.step, a.steps)}), flush=True)
    if hasattr(torch.optim, "Muon"):
        muon = torch.optim.Muon([param()], lr=0.02, weight_decay=0.1)
        print(json.dumps({"rule": "torch.optim.Muon", "m": m, "n": n, "threads": a.threads,
                          "ms": median_ms(muon.step, max(3, a.steps // 3))}), flush=True)


if __name__ == "__main__":
    with torch.no_grad():
        main()
