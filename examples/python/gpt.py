#!/usr/bin/env python3
"""A small GPT-style character model trained with torch, its optimizer from steepest or torch.

    python examples/python/gpt.py --optimizer moga_row [--impl steepest|torch] [--steps 200]
                                  [--device cuda]

The model and data are those of the C++ example examples/libtorch_gpt: a pre-LN transformer
(fused QKV, GELU MLP, untied head) over the bytes of Debian's `fortunes` package (or
--corpus FILE ...), every 10th 4 KiB block held out for validation, the same batches for every
optimizer. `--optimizer` picks the rule:

    adamw     steepest.torch.AdamW              | torch.optim.AdamW(fused=True)
    moga_row  steepest.torch.MOGARow            | (no torch peer)
    muon      steepest.torch.Muon (AdamW on embeddings, head and vectors)
                                                | torch.optim.Muon on hidden matrices + AdamW
    scion     steepest.torch.Scion              | (no torch peer)

It prints the training loss as it goes, then the validation loss and the optimizer step's own
time per step (the step alone, timed around opt.step(); forward and backward excluded).
"""
import argparse
import glob
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def load_corpus(files, block=4096):
    """(train ids, validation ids, vocabulary size) of the files' bytes; every 10th block held out."""
    text = b"".join(open(f, "rb").read() for f in files)
    if len(text) < 20 * block:
        sys.exit("corpus too small: %d bytes" % len(text))
    vocab = sorted(set(text))
    lut = torch.zeros(256, dtype=torch.long)
    lut[torch.tensor(vocab)] = torch.arange(len(vocab))
    data = lut[torch.frombuffer(bytearray(text), dtype=torch.uint8).long()]
    blocks = torch.arange(len(text)) // block % 10
    return data[blocks != 9], data[blocks == 9], len(vocab)


def default_files():
    for d in ("/usr/share/games/fortunes", "/usr/share/common-licenses"):
        files = sorted(f for f in glob.glob(os.path.join(d, "*"))
                       if os.path.isfile(f) and not os.path.islink(f) and not f.endswith((".dat", ".u8")))
        if files:
            return files
    sys.exit("no default corpus: install Debian's fortunes package or pass --corpus FILE")


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, D))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab, width, layers, heads, context):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln(x))


def make_optimizer(name, impl, model, lr):
    if impl == "steepest":
        import steepest.torch as stt
        if name == "adamw":
            return stt.AdamW(model, lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
        if name == "moga_row":
            return stt.MOGARow(model, lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
        if name == "muon":
            return stt.Muon(model, lr=lr, weight_decay=0.1, adamw_lr=3e-3, adamw_betas=(0.9, 0.95),
                            adamw_weight_decay=0.1)
        if name == "scion":
            return stt.Scion(model, lr=lr)
    else:
        if name == "adamw":
            return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
        if name == "muon":
            import steepest.torch as stt  # only its role inference: the same split as steepest's Muon
            roles = stt.infer_roles(model)
            hidden = [p for _, p, r in roles if r == "hidden"]
            rest = [p for _, p, r in roles if r != "hidden"]
            return _Both(torch.optim.Muon(hidden, lr=lr, weight_decay=0.1, momentum=0.95, adjust_lr_fn="original"),
                         torch.optim.AdamW(rest, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=True))
    sys.exit("--optimizer %s has no %s implementation" % (name, impl))


class _Both:
    """Two torch optimizers stepped as one (torch.optim.Muon takes only 2-D parameters)."""

    def __init__(self, *opts):
        self.opts = opts

    def zero_grad(self, set_to_none=True):
        for o in self.opts:
            o.zero_grad(set_to_none=set_to_none)

    def step(self):
        for o in self.opts:
            o.step()


# Scion's lr multiplies its radii (50 on hidden matrices, 3000 on the head: the library's defaults).
DEFAULT_LR = {"adamw": 3e-3, "moga_row": 3e-2, "muon": 0.02, "scion": 2e-4}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--optimizer", choices=sorted(DEFAULT_LR), default="moga_row")
    ap.add_argument("--impl", choices=("steepest", "torch"), default="steepest")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (a package built with nvcc)")
    ap.add_argument("--corpus", nargs="+")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    train, val, vocab = load_corpus(a.corpus or default_files())
    torch.manual_seed(0)  # the same initial weights for every optimizer
    model = GPT(vocab, a.width, a.layers, a.heads, a.context).to(a.device)
    lr = a.lr or DEFAULT_LR[a.optimizer]
    opt = make_optimizer(a.optimizer, a.impl, model, lr)
    print("gpt.py: %s (%s), lr %g; %d layers, width %d, context %d, batch %d, %d steps; %d train bytes, vocabulary %d"
          % (a.optimizer, a.impl, lr, a.layers, a.width, a.context, a.batch, a.steps, len(train), vocab))

    g = torch.Generator().manual_seed(1)  # the same batches for every optimizer

    def batch(data, gen):
        at = torch.randint(0, len(data) - a.context - 1, (a.batch,), generator=gen)
        w = torch.stack([data[i:i + a.context + 1] for i in at.tolist()]).to(a.device)
        return w[:, :-1], w[:, 1:]

    step_ms, smoothed = [], None
    for step in range(1, a.steps + 1):
        x, y = batch(train, g)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        if a.device != "cpu":
            torch.cuda.synchronize()  # the step's own time, not the backward pass still queued
        t0 = time.perf_counter()
        opt.step()
        if a.device != "cpu":
            torch.cuda.synchronize()
        step_ms.append(1e3 * (time.perf_counter() - t0))
        smoothed = loss.item() if smoothed is None else 0.9 * smoothed + 0.1 * loss.item()
        if not math.isfinite(smoothed):
            sys.exit("loss is %s at step %d" % (smoothed, step))
        if step % 20 == 0 or step == a.steps:
            print("step %4d  loss %.3f" % (step, smoothed), flush=True)
    with torch.no_grad():
        vg = torch.Generator().manual_seed(2)
        vloss = sum(F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1)).item()
                    for x, y in (batch(val, vg) for _ in range(8))) / 8
    print("validation %.3f  optimizer step %.3f ms (median of %d)" % (vloss, statistics.median(step_ms), a.steps))


if __name__ == "__main__":
    main()
