#!/usr/bin/env python3
"""Run steepest_bench and print the ratio table of docs/PERFORMANCE.md.

Ratios are taken within one run of one binary (the machine is shared and noisy):
  elementwise / row / column rules: time / time of the hand-fused AdamW loop, same shape and threads
  Newton-Schulz rules: achieved GFLOP/s (plain-algorithm flop count) / Eigen GEMM GFLOP/s
Usage: bench/report.py [path/to/steepest_bench] [--quick] [extra benchmark args...]
"""
import json
import subprocess
import sys


def main():
    args = sys.argv[1:]
    binary = "build-bench/bench/steepest_bench"
    if args and not args[0].startswith("-"):
        binary = args.pop(0)
    quick = "--quick" in args
    args = [a for a in args if a != "--quick"]
    cmd = [binary, "--benchmark_format=json", "--benchmark_min_time=0.3"]
    if quick:
        cmd.append("--benchmark_filter=/m:(1024|4096)/n:4096/")
    cmd += args
    print("running:", " ".join(cmd), file=sys.stderr)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    rows = {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        name = b["run_name"] if "run_name" in b else b["name"]
        rule, m, n, t = parse(name)
        rows[(rule, m, n, t)] = b
    ctx = data["context"]
    print(f"# {ctx.get('host_name', '?')}, {ctx.get('num_cpus')} CPUs @ {ctx.get('mhz_per_cpu')} MHz, "
          f"{ctx.get('date')}")
    print()
    print("| rule | shape | threads | ms | ns/param | GB/s | ratio | against |")
    print("|---|---|---|---|---|---|---|---|")
    for (rule, m, n, t), b in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3])):
        if rule.startswith("Ref_"):
            continue
        shape = "GPT-2 small" if m == 0 else f"{m}x{n}"
        ms = b["real_time"]
        nspp = b.get("ns_per_param", float("nan"))
        gbs = b.get("bytes_per_second", 0) / 1e9
        if "GFLOPs" in b:
            ref = rows.get(("Ref_GemmXXt", m, n, t))
            ratio = b["GFLOPs"] / ref["GFLOPs"] if ref else float("nan")
            against = f"GEMM {ref['GFLOPs']:.0f} GFLOP/s, rule {b['GFLOPs']:.0f}" if ref else "-"
        else:
            ref = rows.get(("Ref_HandFusedAdamW", m, n, t))
            ratio = ms / ref["real_time"] if ref else float("nan")
            against = f"hand-fused AdamW {ref['real_time']:.2f} ms" if ref else "-"
        print(f"| {rule} | {shape} | {t} | {ms:.2f} | {nspp:.3f} | {gbs:.1f} | {ratio:.2f} | {against} |")


def parse(name):
    parts = name.split("/")
    rule = parts[0]
    vals = {}
    for p in parts[1:]:
        if ":" in p:
            k, v = p.split(":")
            vals[k] = int(v)
    return rule, vals.get("m", 0), vals.get("n", 0), vals.get("threads", 1)


if __name__ == "__main__":
    main()
