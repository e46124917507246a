#!/usr/bin/env python3
"""Cross-tool checkpoint test: what st::save writes, Python's safetensors and numpy read, and what
they write, st::load reads (or refuses).

    check_checkpoint.py FIXTURE READER WORKDIR

FIXTURE is tests/checkpoint_fixture (AdamW, two steps), READER scripts/read_checkpoint.py.
Independent reference: AdamW's moments recomputed here in float64 from the same gradient formula.
Exit 77 (CTest: skipped) when the safetensors package is not installed.
"""
import json
import os
import subprocess
import sys
import zlib

try:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file
except ImportError as e:
    print("skipped: %s (pip install safetensors numpy)" % e)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, failures, grad_at_list  # noqa: E402

fixture, reader, work = sys.argv[1:4]
os.makedirs(work, exist_ok=True)
path = os.path.join(work, "adamw.safetensors")
subprocess.run([fixture, "save", path], check=True)



def grad_at(size, t, salt):
    return np.array(grad_at_list(size, t, salt))


# AdamW's moments after two steps, in float64 from the float32 gradients the C++ side used.
b1, b2 = 0.9, 0.99
expect = {}
for name, size, salt, shape in (("blocks.0.w", 12, 0.0, (3, 4)), ("blocks.0.b", 3, 1.0, (3, 1))):
    m = np.zeros(size)
    v = np.zeros(size)
    for t in (1, 2):
        g = grad_at(size, t, salt).astype(np.float32).astype(np.float64)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
    expect[name + "/adam.m"] = m.reshape(shape)
    expect[name + "/adam.v"] = v.reshape(shape)

tensors = load_file(path)
check(sorted(tensors) == sorted(expect), "safetensors reads the tensors %s" % sorted(tensors))
for k, ref in expect.items():
    got = tensors[k]
    check(got.dtype == np.float32 and got.shape == ref.shape, "%s is float32 %s" % (k, ref.shape))
    err = float(np.max(np.abs(got - ref) / (np.abs(ref) + 1e-30)))
    check(err < 1e-5, "%s equals numpy's AdamW moment (max relative error %.2e)" % (k, err))

with safe_open(path, "np") as f:
    meta = f.metadata()
check(meta["format"] == "steepest.optimizer-state" and meta["format_version"] == "2", "format and version")
check(meta["step"] == "2" and meta["optimizer"] == "adam+step" and meta["dtype"] == "F32", "step, optimizer, dtype")
layers = json.loads(meta["layers"])
check([(l["name"], l["role"], l["shape"]) for l in layers] ==
      [("blocks.0.w", "hidden", [3, 4]), ("blocks.0.b", "vector", [3, 1])], "layers: names, roles, shapes")
check(layers[0]["domains"] == ["finite", "non-negative"], "buffer domains recorded")
hp = json.loads(meta["routes"])[0]["hyper"]
check(hp["lr"] == 0.01 and hp["beta2"] == 0.99 and hp["weight_decay"] == 0.1, "hyper-parameters recorded")

# The CRC-32 with zlib, independently of the reader script.
data = open(path, "rb").read()
n = int.from_bytes(data[:8], "little")
zeroed = data[:8] + data[8:8 + n].replace(('"crc32":"%s"' % meta["crc32"]).encode(), b'"crc32":"00000000"', 1) + data[8 + n:]
check("%08x" % zlib.crc32(zeroed) == meta["crc32"], "crc32 matches zlib.crc32")

out = subprocess.run([sys.executable, reader, path, "--values", "2"], capture_output=True, text=True)
check(out.returncode == 0 and "blocks.0.b" in out.stdout and "adam.v" in out.stdout, "read_checkpoint.py prints it")

# Python writes, C++ reads: safetensors orders the tensors its own way, and drops nothing of the
# metadata but the CRC (which the rewrite would invalidate).
meta2 = {k: v for k, v in meta.items() if k != "crc32"}
rewritten = os.path.join(work, "rewritten.safetensors")
save_file(tensors, rewritten, metadata=meta2)
out = subprocess.run([fixture, "load", rewritten], capture_output=True, text=True)
check(out.returncode == 0 and out.stdout.startswith("match step=2"), "a file rewritten by safetensors loads bitwise: %s" % out.stdout.strip())
# The same rewrite with the metadata copied whole, crc32 included: the CRC no longer matches
# (the header changed), and the refusal says to drop the field.
save_file(tensors, rewritten, metadata=meta)
out = subprocess.run([fixture, "load", rewritten], capture_output=True, text=True)
check(out.returncode == 2 and "must drop the crc32 field" in out.stdout,
      "a rewrite that copied crc32 is refused, naming the fix: %s" % out.stdout.strip())
bad = dict(tensors)
bad["blocks.0.b/adam.v"] = bad["blocks.0.b/adam.v"].copy()
bad["blocks.0.b/adam.v"][1, 0] = -1.0
save_file(bad, rewritten, metadata=meta2)
out = subprocess.run([fixture, "load", rewritten], capture_output=True, text=True)
check(out.returncode == 2 and "layer 'blocks.0.b', buffer 'adam.v': entry 1 is -1" in out.stdout,
      "a negative second moment written by numpy is refused: %s" % out.stdout.strip())
meta3 = dict(meta2, step="-3")
save_file(tensors, rewritten, metadata=meta3)
out = subprocess.run([fixture, "load", rewritten], capture_output=True, text=True)
check(out.returncode == 2 and "not a count" in out.stdout, "a step of -3 is refused")

# bf16 state (Bf16State): BF16 tensors, read here from the safetensors layout with json and numpy
# alone (numpy has no bfloat16: a bf16 word is the high half of a float32). Stochastic rounding
# stores one of the two bf16 neighbours of the float32 moment, once per step: after two steps each
# value is within two bf16 ulps (2^-6 relative) of the float64 reference.
path16 = os.path.join(work, "adamw_bf16.safetensors")
subprocess.run([fixture, "save-bf16", path16], check=True)
data = open(path16, "rb").read()
n = int.from_bytes(data[:8], "little")
header = json.loads(data[8:8 + n])
check(header["__metadata__"]["optimizer"] == "adam-bf16+step" and header["__metadata__"]["dtype"] == "F32",
      "bf16 state: optimizer adam-bf16+step, parameters F32")
for k, ref in expect.items():
    k16 = k.replace("/adam.", "/adam-bf16.")
    e = header.get(k16, {})
    check(e.get("dtype") == "BF16" and e.get("shape") == list(ref.shape), "%s is BF16 %s" % (k16, list(ref.shape)))
    b, end = e.get("data_offsets", [0, 0])
    words = np.frombuffer(data[8 + n + b:8 + n + end], dtype="<u2")
    got = (words.astype("<u4") << 16).view("<f4").astype(np.float64).reshape(ref.shape)
    err = float(np.max(np.abs(got - ref) / (np.abs(ref) + 1e-30)))
    check(err <= 2.0 ** -6, "%s within two bf16 ulps of numpy's AdamW moment (max relative error %.2e)" % (k16, err))
with safe_open(path16, "np") as f:
    check(sorted(f.keys()) == sorted(k.replace("/adam.", "/adam-bf16.") for k in expect), "safetensors lists the BF16 tensors")
out = subprocess.run([sys.executable, reader, path16, "--values", "2"], capture_output=True, text=True)
check(out.returncode == 0 and "adam-bf16.v" in out.stdout, "read_checkpoint.py reads and checks BF16: %s" % out.stdout[-200:])

print("%d failures" % len(failures))
sys.exit(1 if failures else 0)
