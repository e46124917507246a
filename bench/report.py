#!/usr/bin/env python3
"""Run steepest_bench and print its ratio table (the CPU tables of docs/PERFORMANCE.md).

Ratios are taken within one run of one binary, because the machine is shared and noisy. Every
benchmark runs --repetitions times, and Google Benchmark interleaves the repetitions of all of
them in random order, so a rule and its reference are measured side by side over the same
window. Each ratio is formed per repetition, and the table gives its median and its spread
(min-max over the repetitions):
  elementwise / row / column rules: time / time of the hand-fused AdamW loop (same shape and threads)
  Newton-Schulz rules: GFLOP/s (plain-algorithm flop count) / Eigen GEMM GFLOP/s; the GEMM
    reference runs as many X X^T products per iteration as 5 Newton-Schulz steps have flops, so
    both are timed over about the same span.

  Newton-Schulz with bf16 products (rules ending in Bf16, built when oneDNN is found): also the
    speedup over the same rule's fp32 path, per repetition.
  Gradients in bf16 (rules ending in Bf16Grads): the speedup over the same rule given fp32 gradients.
  Newton-Schulz on OpenBLAS (rules ending in OpenBlasSyrk / OpenBlasGemm, built when OpenBLAS is
    found): the SYRK form's speedup over the plain-GEMM form and over the Eigen path, per repetition.

Usage: bench/report.py [path/to/steepest_bench] [--quick] [--repetitions N] [--out FILE.md]
                       [--torch PYTHON] [--update FILE.md] [--section NAME] [extra benchmark args...]
--quick keeps 1024x4096 and 4096x4096; --out also writes the tables (with the machine and the
command) to FILE.md. --torch PYTHON (an interpreter with PyTorch, e.g. the peer venv) adds the
PyTorch CPU peer (bench/torch_peer_cpu.py): for each repetition, shape and thread count,
steepest_bench's AdamW, AdamWBf16State, AdamWBf16Grads(Bf16State) and MuonQuintic (the planned default) and then torch's AdamW(fused=True) and
torch.optim.Muon run in turn, and the table gives the per-turn time ratios' median and spread.
--update FILE.md replaces the text between the lines `<!-- cpu-tables:begin -->` and
`<!-- cpu-tables:end -->` of FILE.md with the tables (how docs/PERFORMANCE.md is regenerated);
--section NAME uses the lines `<!-- NAME:begin -->` / `<!-- NAME:end -->` instead (a section
regenerated from a filtered run, e.g. --benchmark_filter=...).
"""
import json
import os
import platform
import statistics
import subprocess
import sys


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    keep = ["avx2", "avx512f", "avx512_bf16", "amx_bf16"]
                    return ", ".join(k for k in keep if k in flags) or "no AVX2"
    except OSError:
        pass
    return "?"


def parse(name):
    parts = name.split("/")
    rule = parts[0]
    vals = {}
    for p in parts[1:]:
        if ":" in p:
            k, v = p.split(":", 1)
            try:
                vals[k] = int(v)
            except ValueError:
                pass
    return rule, vals.get("m", 0), vals.get("n", 0), vals.get("threads", 1)


def torch_peer(binary, torch_py, reps, quick):
    """steepest's AdamW / AdamWBf16State / MuonQuintic and PyTorch's peers, in turns; per-turn ratio table."""
    peer = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_peer_cpu.py")
    shapes = [(1024, 4096), (4096, 4096)] if quick else [(1024, 1024), (1024, 4096), (4096, 4096)]
    pairs = {"AdamW": "torch.AdamW(fused=True)", "AdamWBf16State": "torch.AdamW(fused=True)",
             "AdamWBf16Grads": "torch.AdamW(fused=True)", "AdamWBf16GradsBf16State": "torch.AdamW(fused=True)",
             "MuonQuintic": "torch.optim.Muon"}
    ratios = {}  # (rule, m, n, t) -> list of (steepest ms, torch ms)
    for r in range(reps):
        for m, n in shapes:
            for t in (1, 2):
                cmd = [binary, "--benchmark_format=json", "--benchmark_min_time=0.3",
                       f"--benchmark_filter=^({'|'.join(pairs)})/m:{m}/n:{n}/threads:{t}/"]
                print(f"peer turn {r + 1}/{reps}: {m}x{n}, {t} thread(s)", file=sys.stderr)
                ours = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                env = dict(os.environ, OMP_NUM_THREADS=str(t))
                out = subprocess.run([torch_py, peer, "--shape", str(m), str(n), "--threads", str(t)],
                                     check=True, capture_output=True, text=True, env=env).stdout
                theirs = {d["rule"]: d["ms"] for d in map(json.loads, out.split("\n")[:-1] if out.endswith("\n") else out.split("\n"))}
                for b in ours["benchmarks"]:
                    rule = parse(b.get("run_name", b["name"]))[0]
                    if pairs.get(rule) in theirs:
                        ratios.setdefault((rule, m, n, t), []).append((b["real_time"], theirs[pairs[rule]]))
    lines = ["PyTorch CPU peer (bench/torch_peer_cpu.py), run in turns with steepest_bench: ratio = steepest time / "
             "torch time per turn (below 1: steepest is faster).", "",
             "| steepest rule | torch | shape | threads | steepest ms | torch ms | ratio (median) | spread |",
             "|---|---|---|---|---|---|---|---|"]
    for key in sorted(ratios):
        rule, m, n, t = key
        v = ratios[key]
        rs = [a / b for a, b in v]
        lines.append(f"| {rule} | {pairs[rule]} | {m}x{n} | {t} | {statistics.median(a for a, _ in v):.2f} | "
                     f"{statistics.median(b for _, b in v):.2f} | {statistics.median(rs):.2f} | {min(rs):.2f}-{max(rs):.2f} |")
    return lines


def main():
    args = sys.argv[1:]
    binary = "build-bench/bench/steepest_bench"
    if args and not args[0].startswith("-"):
        binary = args.pop(0)
    quick = "--quick" in args
    args = [a for a in args if a != "--quick"]
    reps, out_md, torch_py, update_md, section = 5, None, None, None, "cpu-tables"
    rest = []
    i = 0
    while i < len(args):
        if args[i] == "--repetitions":
            reps = int(args[i + 1])
            i += 2
        elif args[i] == "--out":
            out_md = args[i + 1]
            i += 2
        elif args[i] == "--update":
            update_md = args[i + 1]
            i += 2
        elif args[i] == "--section":
            section = args[i + 1]
            i += 2
        elif args[i] == "--torch":
            torch_py = args[i + 1]
            i += 2
        else:
            rest.append(args[i])
            i += 1
    cmd = [binary, "--benchmark_format=json", "--benchmark_min_time=0.3",
           f"--benchmark_repetitions={reps}", "--benchmark_enable_random_interleaving=true"]
    if quick:
        cmd.append("--benchmark_filter=/m:(1024|4096)/n:4096/")
    cmd += rest
    print("running:", " ".join(cmd), file=sys.stderr)
    data = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)

    # Per benchmark (rule, m, n, threads): the list of its repetitions, in repetition order.
    runs = {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        key = parse(b.get("run_name", b["name"]))
        runs.setdefault(key, {})[b.get("repetition_index", 0)] = b

    def paired(key, ref_key, value):
        """Per-repetition ratio value(rule) / value(ref), over the repetitions both have."""
        a, r = runs.get(key, {}), runs.get(ref_key, {})
        return [value(a[i]) / value(r[i]) for i in sorted(a) if i in r and value(r[i]) > 0]

    ctx = data["context"]
    lines = []
    lines.append(f"Machine: {cpu_model()} ({cpu_flags()}), {ctx.get('num_cpus')} CPUs, "
                 f"{ctx.get('mhz_per_cpu')} MHz; {ctx.get('date')}; {reps} repetitions, randomly interleaved.")
    lines.append("")
    lines.append("Command: `" + " ".join(["python3", "bench/report.py", binary] + (["--quick"] if quick else [])
                                       + ["--repetitions", str(reps)] + (["--torch", torch_py] if torch_py else [])
                                       + (["--update", update_md] if update_md else [])
                                       + (["--section", section] if section != "cpu-tables" else [])
                                       + rest) + "`")
    lines.append("")
    lines.append("| rule | shape | threads | ms (median) | ns/param | GB/s | ratio (median) | spread | against (median) |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for key in sorted(runs):
        rule, m, n, t = key
        if rule.startswith("Ref_"):
            continue
        reps_of = runs[key]
        ms = statistics.median(b["real_time"] for b in reps_of.values())
        nspp = statistics.median(b.get("ns_per_param", float("nan")) for b in reps_of.values())
        gbs = statistics.median(b.get("bytes_per_second", 0) for b in reps_of.values()) / 1e9
        shape = "GPT-2 small" if m == 0 else f"{m}x{n}"
        if "GFLOPs" in next(iter(reps_of.values())):
            ref = ("Ref_GemmXXt", m, n, t)
            ratios = paired(key, ref, lambda b: b["GFLOPs"])
            ref_g = statistics.median(b["GFLOPs"] for b in runs.get(ref, {}).values()) if ref in runs else float("nan")
            rule_g = statistics.median(b["GFLOPs"] for b in reps_of.values())
            against = f"GEMM {ref_g:.0f} GFLOP/s, rule {rule_g:.0f}"
        else:
            ref = ("Ref_HandFusedAdamW", m, n, t)
            # Time ratio: rule / reference (below 1: the rule is faster).
            ratios = paired(key, ref, lambda b: b["real_time"])
            ref_ms = statistics.median(b["real_time"] for b in runs.get(ref, {}).values()) if ref in runs else float("nan")
            against = f"hand-fused AdamW {ref_ms:.2f} ms"
        if ratios:
            med, lo, hi = statistics.median(ratios), min(ratios), max(ratios)
            r_txt, s_txt = f"{med:.2f}", f"{lo:.2f}-{hi:.2f}"
        else:
            r_txt, s_txt = "-", "-"
        lines.append(f"| {rule} | {shape} | {t} | {ms:.2f} | {nspp:.3f} | {gbs:.1f} | {r_txt} | {s_txt} | {against} |")
    def against_base(suffix):
        """(key, per-repetition speedup, variant ms, base ms) for each rule named <base><suffix>,
        against <base> at the same shape and thread count: speedup = base time / variant time."""
        out = []
        for key in sorted(k for k in runs if k[0].endswith(suffix)):
            rule, m, n, t = key
            ref = (rule[:-len(suffix)], m, n, t)
            sp = paired(ref, key, lambda b: b["real_time"])
            if sp:
                out.append((key, sp, statistics.median(b["real_time"] for b in runs[key].values()),
                            statistics.median(b["real_time"] for b in runs[ref].values())))
        return out

    checks = sorted(k for k in runs if k[0] == "FiniteCheck")
    if checks:
        lines += ["", "The gradient check alone (FiniteCheck: simd::all_finite, 4 B/param read) against a "
                  "hand-written read-only pass over as many floats (Ref_ReadStream), and what the check adds to "
                  "AdamW (AdamW - AdamWUnchecked, medians); ratio = check time / read-pass time per repetition:", "",
                  "| shape | threads | check ms | read pass ms | ratio (median) | spread | check GB/s | "
                  "AdamW - unchecked ms |",
                  "|---|---|---|---|---|---|---|---|"]
        def med_ms(k):
            return statistics.median(b["real_time"] for b in runs[k].values()) if k in runs else float("nan")
        for key in checks:
            _, m, n, t = key
            ref = ("Ref_ReadStream", m, n, t)
            r = paired(key, ref, lambda b: b["real_time"])
            gbs = statistics.median(b.get("bytes_per_second", 0) for b in runs[key].values()) / 1e9
            added = med_ms(("AdamW", m, n, t)) - med_ms(("AdamWUnchecked", m, n, t))
            shape = "GPT-2 small" if m == 0 else f"{m}x{n}"
            r_txt = f"{statistics.median(r):.2f} | {min(r):.2f}-{max(r):.2f}" if r else "- | -"
            lines.append(f"| {shape} | {t} | {med_ms(key):.2f} | {med_ms(ref):.2f} | {r_txt} | {gbs:.1f} | "
                         f"{added:.2f} |")
    bf16 = sorted(k for k in runs if k[0].endswith("Bf16"))
    if bf16:
        lines += ["", "Newton-Schulz products in bf16 (oneDNN) against the same rule in fp32 (Eigen), "
                  "speedup = fp32 time / bf16 time per repetition:", "",
                  "| rule | shape | threads | bf16 ms | fp32 ms | speedup (median) | spread |",
                  "|---|---|---|---|---|---|---|"]
        for (rule, m, n, t), sp, ms_b, ms_f in against_base("Bf16"):
            lines.append(f"| {rule} | {m}x{n} | {t} | {ms_b:.1f} | {ms_f:.1f} | {statistics.median(sp):.2f} | "
                         f"{min(sp):.2f}-{max(sp):.2f} |")
    state16 = sorted(k for k in runs if k[0].endswith("Bf16State"))
    if state16:
        lines += ["", "Optimizer state in bf16 (Bf16State, stochastic rounding) against the same rule with fp32 "
                  "state; speedup = fp32-state time / bf16-state time per repetition:", "",
                  "| rule | shape | threads | bf16-state ms | fp32-state ms | bytes/param | speedup (median) | spread |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, sp, ms_b, ms_f in against_base("Bf16State"):
            rule, m, n, t = key
            bpp = next(iter(runs[key].values())).get("state_bytes_per_param", float("nan"))
            shape = "GPT-2 small" if m == 0 else f"{m}x{n}"
            lines.append(f"| {rule} | {shape} | {t} | {ms_b:.2f} | {ms_f:.2f} | state {bpp:.0f} | "
                         f"{statistics.median(sp):.2f} | {min(sp):.2f}-{max(sp):.2f} |")
    grads16 = against_base("Bf16Grads")
    if grads16:
        lines += ["", "Gradients given in bf16 (Gradients<Eigen::bfloat16>, widened in the pass) against the same "
                  "rule given fp32 gradients; speedup = fp32-gradient time / bf16-gradient time per repetition:", "",
                  "| rule | shape | threads | bf16-gradient ms | fp32-gradient ms | speedup (median) | spread |",
                  "|---|---|---|---|---|---|---|"]
        for (rule, m, n, t), sp, ms_b, ms_f in grads16:
            shape = "GPT-2 small" if m == 0 else f"{m}x{n}"
            lines.append(f"| {rule} | {shape} | {t} | {ms_b:.2f} | {ms_f:.2f} | {statistics.median(sp):.2f} | "
                         f"{min(sp):.2f}-{max(sp):.2f} |")
    syrk = sorted(k for k in runs if k[0].endswith("OpenBlasSyrk"))
    if syrk:
        lines += ["", "Newton-Schulz on OpenBLAS (fp32): the symmetric products by SYRK against the same step "
                  "with three plain GEMMs (OpenBLAS) and against the Eigen path; speedup = other time / "
                  "SYRK time per repetition:", "",
                  "| rule | shape | threads | SYRK ms | plain GEMM ms | SYRK speedup (median) | spread | "
                  "Eigen ms | speedup over Eigen (median) | spread |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for key in syrk:
            rule, m, n, t = key
            plain = (rule[:-len("Syrk")] + "Gemm", m, n, t)
            eigen = (rule[:-len("OpenBlasSyrk")], m, n, t)
            sp, se = paired(plain, key, lambda b: b["real_time"]), paired(eigen, key, lambda b: b["real_time"])
            med_ms = lambda k: statistics.median(b["real_time"] for b in runs[k].values()) if k in runs else float("nan")
            fmt = lambda v: (f"{statistics.median(v):.2f} | {min(v):.2f}-{max(v):.2f}" if v else "- | -")
            lines.append(f"| {rule} | {m}x{n} | {t} | {med_ms(key):.1f} | {med_ms(plain):.1f} | {fmt(sp)} | "
                         f"{med_ms(eigen):.1f} | {fmt(se)} |")
    if torch_py:
        lines += [""] + torch_peer(binary, torch_py, reps, quick)
    text = "\n".join(lines)
    print(text)
    if out_md:
        with open(out_md, "w") as f:
            f.write(text + "\n")
    if update_md:
        begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
        with open(update_md) as f:
            doc = f.read()
        if begin not in doc or end not in doc:
            sys.exit(f"{update_md}: no {begin} ... {end} lines to replace")
        head, rest_doc = doc.split(begin, 1)
        _, tail = rest_doc.split(end, 1)
        with open(update_md, "w") as f:
            f.write(head + begin + "\n" + text + "\n" + end + tail)


if __name__ == "__main__":
    main()
