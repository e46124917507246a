// steepest_bench: update-rule throughput beside the references that make the figures meaningful
// on a shared machine (ratios within one run):
//   Ref/HandFusedAdamW   one-pass AdamW loop, 28 bytes/param (read g m v w, write m v w)
//   Ref/StreamTriad      a = b + s c, 12 bytes/element
//   Ref/ReadStream       a sum over one array, 4 bytes/element (read only)
//   FiniteCheck          the library's gradient check alone (simd::all_finite), 4 bytes/param
//   Ref/GemmXXt          Eigen GEMM X X^T of the Newton-Schulz shapes (GFLOP/s), as many per
//                        iteration as 5 Newton-Schulz steps have flops
//   GramSquare*          the two symmetric products of a Newton-Schulz step (X X^T, A A) alone:
//                        OpenBLAS SYRK against plain GEMM and Eigen (with OpenBLAS only)
// Rules run through the public API (Optimizer::step on a ParamSet), fp32, at 1 and 2 threads
// (last argument). Counters: ns_per_param, bytes_per_second (the bytes the rule must move),
// GFLOPs for Newton-Schulz.
#include <benchmark/benchmark.h>

#include <steepest/steepest.hpp>
#include <steepest/polar/gram_newton_schulz.hpp>
#include <steepest/polar/planner.hpp>
#if defined(STEEPEST_BENCH_ONEDNN)
#include <steepest/polar/onednn.hpp>
#endif
#if defined(STEEPEST_BENCH_OPENBLAS)
#include <steepest/polar/openblas.hpp>
#endif

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace st = steepest;

namespace {

void set_threads(int t) {
#if defined(_OPENMP)
  omp_set_num_threads(t);
  Eigen::setNbThreads(t);
#else
  (void)t;
#endif
#if defined(STEEPEST_BENCH_OPENBLAS)
  openblas_set_num_threads(t);  // OpenBLAS's own pool (pthreads), not OpenMP's
#endif
}

// Uniform(-1, 1) from a 64-bit LCG: fast enough that building the 124M-parameter set does not
// dominate the run (mt19937 + normal took seconds).
std::vector<float> random_vec(std::size_t n, unsigned seed) {
  std::vector<float> v(n);
  std::uint64_t x = 0x9E3779B97F4A7C15ull * (seed + 1);
  for (auto& e : v) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    e = float(std::int32_t(x >> 32)) * (1.0f / 2147483648.0f);
  }
  return v;
}

// Parameters of the GPT-2-small set built by gpt2_small() below.
std::size_t gpt2_param_count() {
  const std::size_t d = 768;
  const std::size_t block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) +
                            (4 * d * d + d);
  return 50257 * d + 1024 * d + 12 * block + 2 * d;
}

std::size_t ref_size(const benchmark::State& state) {
  return state.range(0) == 0 ? gpt2_param_count() : std::size_t(state.range(0) * state.range(1));
}

void counters(benchmark::State& state, double params, double bytes_per_param) {
  state.counters["ns_per_param"] =
      benchmark::Counter(params * 1e-9, benchmark::Counter::kIsIterationInvariantRate |
                                            benchmark::Counter::kInvert);
  state.SetBytesProcessed(int64_t(double(state.iterations()) * params * bytes_per_param));
  state.counters["params"] = params;
}

// ---- references --------------------------------------------------------------------------

// The hand-fused AdamW loop: what a careful engineer writes for one layer.
void hand_adamw(float* __restrict w, const float* __restrict g, float* __restrict m,
                float* __restrict v, std::ptrdiff_t n, float lr, float b1, float b2, float eps,
                float wd, float c1, float c2) {
#if defined(_OPENMP)
#pragma omp parallel for simd schedule(static)
#endif
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    const float mi = b1 * m[i] + (1 - b1) * g[i];
    const float vi = b2 * v[i] + (1 - b2) * g[i] * g[i];
    m[i] = mi;
    v[i] = vi;
    w[i] = (1 - lr * wd) * w[i] - lr * (c1 * mi) / (c2 * std::sqrt(vi) + eps);
  }
}

void Ref_HandFusedAdamW(benchmark::State& state) {
  const auto n = ref_size(state);
  set_threads(int(state.range(2)));
  auto w = random_vec(n, 1), g = random_vec(n, 2), m = random_vec(n, 3), v = random_vec(n, 4);
  for (auto& x : v) x = std::abs(x);
  for (auto _ : state) {
    hand_adamw(w.data(), g.data(), m.data(), v.data(), std::ptrdiff_t(n), 1e-3f, 0.9f, 0.999f,
               1e-8f, 0.1f, 1.1f, 1.05f);
    benchmark::ClobberMemory();
  }
  counters(state, double(n), 28);
}

void Ref_StreamTriad(benchmark::State& state) {
  const auto n = ref_size(state);
  set_threads(int(state.range(2)));
  auto a = random_vec(n, 1), b = random_vec(n, 2), c = random_vec(n, 3);
  float* __restrict pa = a.data();
  const float* __restrict pb = b.data();
  const float* __restrict pc = c.data();
  for (auto _ : state) {
#if defined(_OPENMP)
#pragma omp parallel for simd schedule(static)
#endif
    for (std::ptrdiff_t i = 0; i < std::ptrdiff_t(n); ++i) pa[i] = pb[i] + 1.5f * pc[i];
    benchmark::ClobberMemory();
  }
  counters(state, double(n), 12);
}

// A read-only pass (4 bytes/element): the sum of the entries, one hand loop. What the finite
// check (FiniteCheck below) is set against: both read each gradient entry once and write nothing.
void Ref_ReadStream(benchmark::State& state) {
  const auto n = ref_size(state);
  set_threads(int(state.range(2)));
  const auto a = random_vec(n, 2);
  const float* __restrict pa = a.data();
  for (auto _ : state) {
    float sum = 0;
#if defined(_OPENMP)
#pragma omp parallel for simd schedule(static) reduction(+ : sum)
#endif
    for (std::ptrdiff_t i = 0; i < std::ptrdiff_t(n); ++i) sum += pa[i];
    benchmark::DoNotOptimize(sum);
  }
  counters(state, double(n), 4);
}

// The GEMM reference for Newton-Schulz: X X^T products of the layer's shape, as many per
// iteration as the flops of 5 Newton-Schulz steps (5 (4 k^2 n + 2 k^3), the count the rules
// report), so one iteration lasts about as long as one step of the rule it is set against and
// both are timed over the same span of the run; then GFLOP/s of that product.
void Ref_GemmXXt(benchmark::State& state) {
  const Eigen::Index m = state.range(0), n = state.range(1);
  set_threads(int(state.range(2)));
  const Eigen::Index k = std::min(m, n), l = std::max(m, n);
  Eigen::MatrixXf X = Eigen::MatrixXf::Random(k, l), A(k, k);
  const double gemm = 2.0 * double(k) * double(k) * double(l);
  const double ns = 5.0 * (4.0 * double(k) * double(k) * double(l) + 2.0 * double(k) * double(k) * double(k));
  const int reps = std::max(1, int(std::lround(ns / gemm)));
  for (auto _ : state) {
    for (int r = 0; r < reps; ++r) {
      A.noalias() = X * X.transpose();
      benchmark::DoNotOptimize(A.data());
    }
  }
  state.counters["GFLOPs"] =
      benchmark::Counter(reps * gemm * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["gemms_per_iteration"] = reps;
}

// ---- the rules through the public API -------------------------------------------------------

struct Layers {
  std::vector<std::vector<float>> w, g;
  std::vector<std::vector<Eigen::bfloat16>> gb;
  st::ParamSet<float> params;
  st::Gradients<float> grads;
  st::Gradients<Eigen::bfloat16> grads_bf16;  // the same gradients rounded to bf16, when asked
  bool bf16 = false;
  void add(const std::string& name, st::Role role, Eigen::Index m, Eigen::Index n) {
    w.push_back(random_vec(std::size_t(m * n), unsigned(w.size() + 10)));
    g.push_back(random_vec(std::size_t(m * n), unsigned(g.size() + 1000)));
    for (auto& x : w.back()) x *= 0.02f;
    params.add(name, role, w.back().data(), m, n);
    grads.add(g.back().data(), m, n);
    if (bf16) {
      gb.emplace_back(g.back().begin(), g.back().end());
      grads_bf16.add(gb.back().data(), m, n);
    }
  }
};

// GPT-2 small (124M): token and position embeddings, 12 blocks (qkv, attention projection,
// MLP in/out, their biases and two LayerNorm gains/biases), final LayerNorm; the head is tied to
// the token embedding, as in GPT-2. Shapes are out x in.
void gpt2_small(Layers& L) {
  const int d = 768, vocab = 50257, ctx = 1024;
  L.w.reserve(200);
  L.g.reserve(200);
  L.add("wte", st::Role::Output, vocab, d);  // tied: the head's geometry governs it
  L.add("wpe", st::Role::Embedding, d, ctx);
  for (int b = 0; b < 12; ++b) {
    const std::string p = "h" + std::to_string(b) + ".";
    L.add(p + "ln1.g", st::Role::Vector, d, 1);
    L.add(p + "ln1.b", st::Role::Vector, d, 1);
    L.add(p + "attn.qkv", st::Role::Hidden, 3 * d, d);
    L.add(p + "attn.qkv.b", st::Role::Vector, 3 * d, 1);
    L.add(p + "attn.proj", st::Role::Hidden, d, d);
    L.add(p + "attn.proj.b", st::Role::Vector, d, 1);
    L.add(p + "ln2.g", st::Role::Vector, d, 1);
    L.add(p + "ln2.b", st::Role::Vector, d, 1);
    L.add(p + "mlp.fc", st::Role::Hidden, 4 * d, d);
    L.add(p + "mlp.fc.b", st::Role::Vector, 4 * d, 1);
    L.add(p + "mlp.proj", st::Role::Hidden, d, 4 * d);
    L.add(p + "mlp.proj.b", st::Role::Vector, d, 1);
  }
  L.add("ln_f.g", st::Role::Vector, d, 1);
  L.add("ln_f.b", st::Role::Vector, d, 1);
}

// bf16_grads: the step is given the gradients in bf16 (Gradients<Eigen::bfloat16>).
template <class MakeOpt>
void run_rule(benchmark::State& state, MakeOpt make, double bytes_per_param, bool ns_flops, bool bf16_grads = false) {
  set_threads(int(state.range(2)));
  Layers L;
  L.bf16 = bf16_grads;
  L.gb.reserve(200);
  if (state.range(0) == 0) {
    gpt2_small(L);
  } else {
    L.add("w", st::Role::Hidden, state.range(0), state.range(1));
  }
  auto opt = make();
  auto s = opt.init(L.params);
  auto step = [&] { return bf16_grads ? opt.step(L.params, L.grads_bf16, s) : opt.step(L.params, L.grads, s); };
  step();  // first step: workspaces sized here
  for (auto _ : state) {
    step();
    benchmark::ClobberMemory();
  }
  const double params = double(L.params.num_params());
  counters(state, params, bytes_per_param);
  state.counters["state_bytes_per_param"] = double(s.state_bytes()) / params;
  if (ns_flops) {
    double flops = 0;
    for (const auto& l : L.params) {
      if (l.role != st::Role::Hidden) continue;
      const double k = double(std::min(l.rows, l.cols)), n = double(std::max(l.rows, l.cols));
      flops += 5 * (4 * k * k * n + 2 * k * k * k);
    }
    state.counters["GFLOPs"] =
        benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  }
}

st::Hyper hp() {
  st::Hyper h;
  h.lr = 1e-3;
  h.weight_decay = 0.1;
  return h;
}

void AdamW(benchmark::State& s) { run_rule(s, [] { return st::adamw(hp()); }, 28, false); }
// The same rule without the finite-gradient check (NonFinitePolicy::Unchecked): the check's cost.
void AdamWUnchecked(benchmark::State& s) {
  run_rule(s, [] { auto h = hp(); h.on_non_finite = st::NonFinitePolicy::Unchecked; return st::adamw(h); }, 28, false);
}
// The check that NonFinitePolicy::Error (the default) runs before a step, alone: one read of
// the gradient (the part of AdamW's time that AdamWUnchecked does not have).
void FiniteCheck(benchmark::State& state) {
  const auto n = ref_size(state);
  set_threads(int(state.range(2)));
  const auto g = random_vec(n, 2);
  for (auto _ : state) benchmark::DoNotOptimize(st::simd::all_finite<st::gradient_limit_exponent<float>>(g.data(), st::Index(n)));
  counters(state, double(n), 4);
}
void AdamWRescaled(benchmark::State& s) { run_rule(s, [] { return st::adamw_rescaled(hp()); }, 28, false); }
void Sign(benchmark::State& s) { run_rule(s, [] { return st::sign_descent(hp()); }, 12, false); }
void Lion(benchmark::State& s) { run_rule(s, [] { return st::lion(hp()); }, 20, false); }
void MogaRow(benchmark::State& s) { run_rule(s, [] { return st::moga_row(hp()); }, 28, false); }
void MogaCol(benchmark::State& s) { run_rule(s, [] { return st::moga_col(hp()); }, 28, false); }
void MogaRowMomentum(benchmark::State& s) { run_rule(s, [] { return st::moga_row_momentum(hp()); }, 20, false); }
// The same rules with their state in bf16 (Bf16State: stochastic rounding, arithmetic in fp32):
// AdamW moves 20 bytes per parameter instead of 28, MOGA-row momentum-only 16 instead of 20.
void AdamWBf16State(benchmark::State& s) { run_rule(s, [] { return st::adamw<st::Bf16State>(hp()); }, 20, false); }
void MogaRowMomentumBf16State(benchmark::State& s) {
  run_rule(s, [] { return st::moga_row_momentum<st::Bf16State>(hp()); }, 16, false);
}
// AdamW given bf16 gradients (Gradients<Eigen::bfloat16>, widened in the pass): 26 bytes per
// parameter with fp32 state, 18 with bf16 state (the finite check reads 2 more either way).
void AdamWBf16Grads(benchmark::State& s) { run_rule(s, [] { return st::adamw(hp()); }, 26, false, true); }
void AdamWBf16GradsBf16State(benchmark::State& s) {
  run_rule(s, [] { return st::adamw<st::Bf16State>(hp()); }, 18, false, true);
}
// MOGA-row momentum-only given bf16 gradients: 18 bytes per parameter, 14 with bf16 momentum.
void MogaRowMomentumBf16Grads(benchmark::State& s) { run_rule(s, [] { return st::moga_row_momentum(hp()); }, 18, false, true); }
void MogaRowMomentumBf16GradsBf16State(benchmark::State& s) {
  run_rule(s, [] { return st::moga_row_momentum<st::Bf16State>(hp()); }, 14, false, true);
}
// The label names the engine Newton-Schulz's planner chose for the case's shape and threads.
void label_plan(benchmark::State& s) {
  const st::Index k = std::min(s.range(0), s.range(1)), l = std::max(s.range(0), s.range(1));
  for (const auto& p : st::polar_planner().plans())
    if (p.k == k && p.l == l && p.threads == int(s.range(2))) s.SetLabel(p.engine + " (" + p.how + ")");
}
// Muon as a user gets it: the planner over every engine this build has (polar/auto_products.hpp),
// which measures them on the first step's input (outside the timed loop).
void MuonQuintic(benchmark::State& s) {
  run_rule(s, [] { return st::muon(hp()); }, 20, true);
  label_plan(s);
}
void MuonPolarExpress(benchmark::State& s) {
  run_rule(s, [] { return st::muon<st::SpectralPolarExpress>(hp()); }, 20, true);
  label_plan(s);
}
void Scion(benchmark::State& s) { run_rule(s, [] { return st::scion(hp()); }, 20, true); }
// The same Muon with fp32 products on Eigen only (the engine before the planner), and in the
// Gram form restarted before step 3 (Eigen, fp32).
void MuonQuinticEigen(benchmark::State& s) {
  using Polar = st::SpectralNorm<st::NewtonSchulz<st::QuinticSchedule, 5, st::EigenProducts>>;
  run_rule(s, [] { return st::muon<Polar>(hp()); }, 20, true);
}
void MuonQuinticGram(benchmark::State& s) { run_rule(s, [] { return st::muon<st::SpectralGram>(hp()); }, 20, true); }
#if defined(STEEPEST_BENCH_ONEDNN)
// The same Muon with its Newton-Schulz products in bf16 on oneDNN (polar/onednn.hpp); report.py
// sets it against MuonQuinticEigen (the fp32 Eigen path) and MuonPolarExpress.
void MuonQuinticBf16(benchmark::State& s) { run_rule(s, [] { return st::muon<st::SpectralBf16>(hp()); }, 20, true); }
void MuonPolarExpressBf16(benchmark::State& s) {
  run_rule(s, [] { return st::muon<st::SpectralPolarExpressBf16>(hp()); }, 20, true);
}
#endif
#if defined(STEEPEST_BENCH_OPENBLAS)
// The same Muon with its Newton-Schulz products on OpenBLAS (polar/openblas.hpp), in fp32: the
// symmetric products by SYRK, and the reference with three plain GEMMs. report.py sets the SYRK
// form against both the plain form and MuonQuinticEigen.
void MuonQuinticOpenBlasSyrk(benchmark::State& s) {
  using G = st::SpectralNorm<st::NewtonSchulz<st::QuinticSchedule, 5, st::OpenBlas<st::GramProduct::Syrk>>>;
  run_rule(s, [] { return st::muon<G>(hp()); }, 20, true);
}
void MuonQuinticOpenBlasGemm(benchmark::State& s) {
  using G = st::SpectralNorm<st::NewtonSchulz<st::QuinticSchedule, 5, st::OpenBlas<st::GramProduct::Gemm>>>;
  run_rule(s, [] { return st::muon<G>(hp()); }, 20, true);
}

// The two symmetric products of one Newton-Schulz step alone, A = X X^T and C = A A, on the
// layer's Gram shape (X k x l, k <= l), exactly as the OpenBLAS engine forms them: SYRK, the
// mirror of A's upper triangle that the second SYRK reads, SYRK (k^2 l + k^3 flops); against two
// plain GEMMs (2 k^2 l + 2 k^3) and Eigen's two products. These measure the target "symmetric
// products >= 1.4x plain" product by product: the whole step also has B X, which has no symmetry.
struct GramSquareInputs {
  Eigen::Index k, l;
  st::RowMatrix<float> X, A, C;
  explicit GramSquareInputs(benchmark::State& s)
      : k(std::min(s.range(0), s.range(1))), l(std::max(s.range(0), s.range(1))), X(k, l), A(k, k), C(k, k) {
    set_threads(int(s.range(2)));
    const auto r = random_vec(std::size_t(k * l), 7);
    X = Eigen::Map<const st::RowMatrix<float>>(r.data(), k, l) * (1.0f / std::sqrt(float(l)));
  }
  void finish(benchmark::State& s, double flops) const {
    s.counters["GFLOPs"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  }
};
void GramSquareOpenBlasSyrk(benchmark::State& s) {
  GramSquareInputs g(s);
  const blasint bk = blasint(g.k), bl = blasint(g.l);
  for (auto _ : s) {
    st::detail::blas_syrk(bk, bl, g.X.data(), bl, g.A.data(), bk);
    st::detail::mirror_upper_to_lower(g.A.data(), g.k);
    st::detail::blas_syrk(bk, bk, g.A.data(), bk, g.C.data(), bk);
    benchmark::DoNotOptimize(g.C.data());
  }
  g.finish(s, double(g.k) * double(g.k) * double(g.l + g.k));
}
void GramSquareOpenBlasGemm(benchmark::State& s) {
  GramSquareInputs g(s);
  const blasint bk = blasint(g.k), bl = blasint(g.l);
  for (auto _ : s) {
    st::detail::blas_gemm(CblasTrans, bk, bk, bl, g.X.data(), bl, g.X.data(), bl, g.A.data(), bk);
    st::detail::blas_gemm(CblasNoTrans, bk, bk, bk, g.A.data(), bk, g.A.data(), bk, g.C.data(), bk);
    benchmark::DoNotOptimize(g.C.data());
  }
  g.finish(s, 2.0 * double(g.k) * double(g.k) * double(g.l + g.k));
}
void GramSquare(benchmark::State& s) {  // Eigen's products, the default engine's
  GramSquareInputs g(s);
  for (auto _ : s) {
    g.A.noalias() = g.X * g.X.transpose();
    g.C.noalias() = g.A * g.A;
    benchmark::DoNotOptimize(g.C.data());
  }
  g.finish(s, 2.0 * double(g.k) * double(g.k) * double(g.l + g.k));
}
#endif

// Shapes (rows, cols); (0, 0) is the GPT-2-small parameter set.
const std::vector<std::pair<int, int>> kShapes = {{256, 256},   {1024, 1024}, {4096, 4096},
                                                  {1024, 4096}, {4096, 1024}, {0, 0}};
const std::vector<std::pair<int, int>> kNsShapes = {{256, 256}, {1024, 1024}, {1024, 4096},
                                                    {4096, 1024}, {4096, 4096}};

void shapes(benchmark::internal::Benchmark* b, bool ns) {
  for (auto [m, n] : ns ? kNsShapes : kShapes)
    for (int t : {1, 2}) b->Args({m, n, t});
  b->ArgNames({"m", "n", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK(Ref_HandFusedAdamW)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(Ref_StreamTriad)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(Ref_ReadStream)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(Ref_GemmXXt)->Apply([](auto* b) { shapes(b, true); });
BENCHMARK(FiniteCheck)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(AdamW)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(AdamWUnchecked)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(AdamWRescaled)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(Sign)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(Lion)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(MogaRow)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(MogaCol)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(MogaRowMomentum)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(AdamWBf16State)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(MogaRowMomentumBf16State)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(AdamWBf16Grads)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(AdamWBf16GradsBf16State)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(MogaRowMomentumBf16Grads)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(MogaRowMomentumBf16GradsBf16State)->Apply([](auto* b) { shapes(b, false); });
BENCHMARK(MuonQuintic)->Apply([](auto* b) { shapes(b, true); });
BENCHMARK(MuonPolarExpress)->Apply([](auto* b) { shapes(b, true); });
BENCHMARK(Scion)->Apply([](auto* b) { shapes(b, true); });
BENCHMARK(MuonQuinticGram)->Apply([](auto* b) { shapes(b, true); });
BENCHMARK(MuonQuinticEigen)->Apply([](auto* b) { shapes(b, true); });
#if defined(STEEPEST_BENCH_ONEDNN)
BENCHMARK(MuonQuinticBf16)->Apply([](auto* b) { shapes(b, true); });
BENCHMARK(MuonPolarExpressBf16)->Apply([](auto* b) { shapes(b, true); });
#endif
#if defined(STEEPEST_BENCH_OPENBLAS)
BENCHMARK(MuonQuinticOpenBlasSyrk)->Apply([](auto* b) { shapes(b, true); });
BENCHMARK(MuonQuinticOpenBlasGemm)->Apply([](auto* b) { shapes(b, true); });
BENCHMARK(GramSquareOpenBlasSyrk)->Apply([](auto* b) { shapes(b, true); });
BENCHMARK(GramSquareOpenBlasGemm)->Apply([](auto* b) { shapes(b, true); });
BENCHMARK(GramSquare)->Apply([](auto* b) { shapes(b, true); });
#endif

BENCHMARK_MAIN();
