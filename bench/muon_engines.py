#!/usr/bin/env python3
"""Muon's step with each Newton-Schulz engine against torch.optim.Muon, in turns, one window.

    python3 bench/muon_engines.py BUILD/bench/steepest_bench [--torch-python PY] [--rounds 3]
        [--engines MuonQuintic,MuonQuinticGram] [--shapes 1024x4096,4096x1024,1024x1024]

For each shape and thread count (1, 2): each engine's steepest_bench case (Google Benchmark,
real time per step), then bench/torch_peer_cpu.py's torch.optim.Muon (median of its steps), and
again for --rounds rounds. Prints the median over rounds per row and each engine's time as a
fraction of torch's. A benchmark, not a test.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def bench(binary, case, m, n, t):
    flt = "^%s/m:%d/n:%d/threads:%d/" % (case, m, n, t)
    out = subprocess.run([binary, "--benchmark_filter=" + flt, "--benchmark_format=json",
                          "--benchmark_min_time=0.5"], capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)["benchmarks"]
    if not rows:
        sys.exit("no benchmark matches " + flt)
    return rows[0]["real_time"]  # ms (the cases report milliseconds)


def torch_muon(python, m, n, t):
    out = subprocess.run([python, os.path.join(HERE, "torch_peer_cpu.py"), "--shape", str(m), str(n),
                          "--threads", str(t), "--steps", "9"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        row = json.loads(line)
        if row["rule"] == "torch.optim.Muon":
            return row["ms"]
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--torch-python", default="/opt/torch-peer/bin/python")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engines", default="MuonQuintic,MuonQuinticEigen,MuonQuinticGram")
    ap.add_argument("--shapes", default="1024x4096,4096x1024,1024x1024")
    a = ap.parse_args()
    engines = a.engines.split(",")
    shapes = [tuple(int(x) for x in s.split("x")) for s in a.shapes.split(",")]
    with open("/proc/cpuinfo") as f:
        info = f.read().splitlines()
    field = lambda name: next((l.split(":", 1)[1].strip() for l in info if l.startswith(name)), "?")
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
    flags = [f for f in field("flags").split() if f in wanted]
    print("CPU: %s (family %s, model %s; %s); median of %d rounds, ms per step" % (
        field("model name"), field("cpu family"), field("model\t"), " ".join(flags) or "no AVX2", a.rounds))
    print("| shape | threads | " + " | ".join(engines) + " | torch.optim.Muon | " +
          " | ".join("%s / torch" % e for e in engines) + " |")
    print("|---" * (3 + 2 * len(engines)) + "|")
    for m, n in shapes:
        for t in (1, 2):
            times = {e: [] for e in engines + ["torch"]}
            for _ in range(a.rounds):
                for e in engines:
                    times[e].append(bench(a.binary, e, m, n, t))
                times["torch"].append(torch_muon(a.torch_python, m, n, t))
            med = {k: statistics.median(v) for k, v in times.items()}
            print("| %dx%d | %d | " % (m, n, t) + " | ".join("%.1f" % med[e] for e in engines) +
                  " | %.1f | " % med["torch"] + " | ".join("%.2f" % (med[e] / med["torch"]) for e in engines) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
