// CUDA backend tests: every device rule against the CPU backend on the same data.
// Without a CUDA device the binary prints why and exits with 77, which CTest reports as skipped.
#include <steepest/steepest.hpp>
#include <steepest/cuda/cuda.cuh>
#include <steepest/cuda/exact_polar.cuh>

#include <cmath>
#include <cstdio>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace st = steepest;
namespace sc = steepest::cuda;
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using st::Index;

static int failures = 0, checks = 0;
#define EXPECT(cond, ...)                                      \
  do {                                                         \
    ++checks;                                                  \
    if (!(cond)) {                                             \
      ++failures;                                              \
      std::printf("FAIL %s:%d: %s -- ", __FILE__, __LINE__, #cond); \
      std::printf(__VA_ARGS__);                                \
      std::printf("\n");                                       \
    }                                                          \
  } while (0)

namespace {

RowMat random(Index m, Index n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  RowMat a(m, n);
  for (Index i = 0; i < a.size(); ++i) a.data()[i] = nd(rng);
  return a;
}

struct Dev {
  float* p = nullptr;
  Index m = 0, n = 0;
  Dev(const RowMat& a) : m(a.rows()), n(a.cols()) {
    sc::check(cudaMalloc(&p, sizeof(float) * std::size_t(std::max<Index>(1, a.size()))), "cudaMalloc");
    sc::check(cudaMemcpy(p, a.data(), sizeof(float) * std::size_t(a.size()), cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  Dev(const Dev&) = delete;
  ~Dev() { cudaFree(p); }
  sc::DeviceMatrix<float> view() const { return {p, m, n}; }
  RowMat host() const {
    RowMat a(m, n);
    sc::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    sc::check(cudaMemcpy(a.data(), p, sizeof(float) * std::size_t(a.size()), cudaMemcpyDeviceToHost), "cudaMemcpy");
    return a;
  }
};

// Whether f() throws an E.
template <class E, class F>
bool throws(F&& f) {
  try {
    f();
  } catch (const E&) {
    return true;
  }
  return false;
}

double rel(const RowMat& a, const RowMat& b) {
  const double d = (a - b).norm(), s = b.norm();
  return s > 0 ? d / s : d;
}

// The reference is the CPU policy on the same float data, or (double_ref) on that data in
// double, for directions whose device error bound is derived below and should not include the
// CPU float rounding as well.
// Worst-case relative error of the device's VectorNorm<2> direction g / ||g|| in fp32
// (u = 2^-24), from how reduce.cuh sums: each thread accumulates ceil(N / (256 B)) squares of
// its grid-stride slice, a block adds its 256 partials in an 8-level tree, and the B =
// grid_for(N) block sums are added by atomics one after another, so the sum of squares is off by
// at most (per-thread + 8 + B) u relative; the square root halves that, and the root, the
// division and the scaling multiply add at most 3 u. (The first GPU run compared against the
// CPU's float result and reported the CPU's own 4e-5 rounding, since fixed: see
// tests/test_norms.cpp.)
double vector_norm_tolerance(Index count) {
  const double u = std::ldexp(1.0, -24);
  const double blocks = sc::kernels::grid_for(count);
  const double per_thread = std::ceil(double(count) / (256.0 * blocks));
  return ((per_thread + 8.0 + blocks) / 2.0 + 3.0) * u;
}

template <class Policy>
void check_dualize(const char* name, Index m, Index n, double tol, sc::Context& ctx, bool double_ref = false) {
  RowMat g = random(m, n, unsigned(m * 131 + n));
  if (m > 2) g.row(1).setZero();  // a zero row: zero direction on both backends
  RowMat ref(m, n);
  if (double_ref) {
    using RowMatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const RowMatD gd = g.cast<double>();
    RowMatD rd(m, n);
    Policy::dualize(gd, rd);
    ref = rd.cast<float>();
  } else {
    Policy::dualize(g, ref);
  }
  Dev dg(g), dout(RowMat::Zero(m, n));
  Policy::dualize(dg.view(), dout.view(), ctx);
  const double e = rel(dout.host(), ref);
  EXPECT(e < tol, "%s %ldx%ld: relative difference %.3g (tolerance %.1g)", name, long(m), long(n), e, tol);
}

// Runs `steps` steps of a CPU optimizer and of its device twin on the same tensors and
// gradients; returns the worst relative difference of the parameters.
template <class CpuOpt, class GpuOpt>
double compare_steps(CpuOpt cpu, GpuOpt gpu, const std::vector<std::pair<Index, Index>>& shapes, int steps,
                     sc::Context& ctx, const std::vector<st::Role>& roles = {}) {
  auto role_of = [&](std::size_t i) { return roles.empty() ? st::Role::Hidden : roles[i]; };
  std::vector<RowMat> w, g;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    w.push_back(random(shapes[i].first, shapes[i].second, unsigned(7 + i)) * 0.1f);
    g.push_back(RowMat(shapes[i].first, shapes[i].second));
  }
  std::vector<RowMat> wc = w;
  st::ParamSet<float> ps;
  st::Gradients<float> gs;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    ps.add("p" + std::to_string(i), role_of(i), wc[i].data(), shapes[i].first, shapes[i].second);
    gs.add(g[i].data(), shapes[i].first, shapes[i].second);
  }
  auto cs = cpu.init(ps);
  std::vector<std::unique_ptr<Dev>> dw, dg;
  std::vector<sc::Tensor> ts;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    dw.push_back(std::make_unique<Dev>(w[i]));
    dg.push_back(std::make_unique<Dev>(g[i]));
    ts.push_back({dw.back()->p, dg.back()->p, shapes[i].first, shapes[i].second, role_of(i)});
  }
  auto gst = gpu.init(ts, ctx);
  for (int t = 0; t < steps; ++t) {
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      // Copy into the existing storage: a move assignment would swap buffers and leave the CPU
      // optimizer's Gradients pointing at freed memory.
      g[i].noalias() = random(shapes[i].first, shapes[i].second, unsigned(1000 * t + i));
      sc::check(cudaMemcpyAsync(dg[i]->p, g[i].data(), sizeof(float) * std::size_t(g[i].size()),
                                cudaMemcpyHostToDevice, ctx.stream()),
                "cudaMemcpyAsync");
    }
    cpu.step(ps, gs, cs);
    gpu.step(ts, gst, ctx);
  }
  double worst = 0;
  for (std::size_t i = 0; i < shapes.size(); ++i) worst = std::max(worst, rel(dw[i]->host(), wc[i]));
  EXPECT(gst.steps(ctx) == steps, "device step counter %lld, expected %d", gst.steps(ctx), steps);
  return worst;
}

}  // namespace

// Host-only: the multi-tensor launch tables cover every (tensor, chunk) pair exactly once, with
// the right pointers, across table splits (too many tensors, too many chunks). Runs without a GPU.
// ---- every chain's per-element rule, compiled as device code ---------------------------------
// A chain's fused form is a tuple of its transforms' Elem kernels (optim/transforms.hpp), which
// Chain::fused runs over SIMD packets on the CPU. With P = float the same kernels are plain
// STEEPEST_HD code; this is their device form, one thread per element. Taking each named
// optimizer's instantiation below makes nvcc compile its rule for the GPU in CI (no GPU needed):
// the rule the CPU tests check is the one a device kernel runs, not a second copy.
template <class... E>
__global__ void chain_elementwise(const float* g, Index count, Index cols, E... es) {
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += Index(gridDim.x) * blockDim.x) {
    (es.begin_row(i / cols), ...);
    float u = g[i];
    ((u = es.template apply<float>(u, i, i % cols)), ...);
  }
}

template <class ChainT>
struct DeviceForm;
template <class... Ts>
struct DeviceForm<st::Chain<Ts...>> {
  static constexpr auto kernel = &chain_elementwise<typename Ts::template Elem<float>...>;
};

template <class... Chains>
int count_device_forms() {
  const void* kernels[] = {reinterpret_cast<const void*>(DeviceForm<Chains>::kernel)...};
  int n = 0;
  for (const void* k : kernels) n += k != nullptr;
  return n;
}

void check_device_forms() {
  // Every named optimizer's chain whose transforms all have an elementwise form (all but the
  // compile-time Dualize<N>, whose direction needs the whole matrix).
  const int n = count_device_forms<st::SGDChain, st::SGDNesterovChain, st::AdamWChain, st::RescaledAdamWChain,
                                   st::SignDescentChain, st::LionChain, st::MogaChain<st::MogaOrder::NormalizeThenAdam>,
                                   st::MogaChain<st::MogaOrder::AdamThenNormalize>, st::MuonChain, st::ScionChain,
                                   st::ScionUnconstrainedChain>();
  EXPECT(n == 11, "device forms compiled: %d of 11", n);
}

void check_launch_tables() {
  struct Case {
    std::vector<Index> sizes;
  };
  const Index C = sc::kernels::kChunk;
  const std::vector<Case> cases = {
      {{1}},
      {{0, 5, 0}},
      {std::vector<Index>(70, 3)},                          // > kMaxTensors tensors
      {{C * 330 + 7}},                                      // one tensor over two tables
      {{C * 100, C * 200 + 1, 5, C * 320, C * 320 + 1}},   // mixed splits
  };
  // Each case twice: all tensors with factor 1, and only the odd-indexed ones (the others
  // filtered out, as MOGA's vectors-only AdamW pass does) with factor = index + 0.5.
  for (const Case& cs : cases)
    for (bool filtered : {false, true}) {
      std::vector<sc::Tensor> ts;
      sc::DeviceState st;
      for (std::size_t i = 0; i < cs.sizes.size(); ++i) {
        // Distinct fake addresses; nothing is dereferenced on the host.
        ts.push_back({reinterpret_cast<float*>(std::uintptr_t(4096 * (i + 1))),
                      reinterpret_cast<const float*>(std::uintptr_t(4096 * (i + 1) + 8)), cs.sizes[i], 1});
        st.s0.emplace_back(), st.s1.emplace_back();
      }
      auto index_of_w = [](const float* w) { return std::size_t(reinterpret_cast<std::uintptr_t>(w) / 4096 - 1); };
      auto index_of = [&](const sc::Tensor& x) { return index_of_w(x.w); };
      auto pick = [&](const sc::Tensor& x) { return !filtered || index_of(x) % 2 == 1; };
      auto scale_of = [&](const sc::Tensor& x) { return filtered ? double(index_of(x)) + 0.5 : 1.0; };
      std::map<std::pair<std::size_t, Index>, int> seen;  // (tensor, chunk) -> times launched
      bool ok = true;
      auto launch = [&](const sc::kernels::MultiTensorTable& tab, int blocks) {
        ok = ok && blocks > 0 && blocks <= sc::kernels::kMaxBlocks;
        for (int b = 0; b < blocks; ++b) {
          const int t = tab.block_tensor[b];
          ok = ok && t < sc::kernels::kMaxTensors;
          const std::size_t i = index_of_w(tab.w[t]);
          ok = ok && i < ts.size() && tab.g[t] == ts[i].g && tab.n[t] == ts[i].size() &&
               tab.scale[t] == float(scale_of(ts[i]));
          ++seen[{i, tab.block_chunk[b]}];
        }
      };
      if (filtered)
        sc::detail::for_each_table(ts, st, launch, pick, scale_of);
      else
        sc::detail::for_each_table(ts, st, launch);
      std::size_t expected = 0;
      for (std::size_t i = 0; i < ts.size(); ++i) {
        if (filtered && i % 2 == 0) continue;
        for (Index c = 0; c < (cs.sizes[i] + C - 1) / C; ++c, ++expected) ok = ok && seen[{i, c}] == 1;
      }
      EXPECT(ok && seen.size() == expected,
             "launch tables for %zu tensors%s: %zu chunks launched, %zu expected", ts.size(),
             filtered ? " (odd ones, scaled)" : "", seen.size(), expected);
    }
}

// Host-only: the device rules' per-element math -- the same __host__ __device__ functions the
// kernels run (bias_corrections, with_scale, rsqrt_or_zero, update<Rule>) -- driven by plain
// loops over one tensor, against the CPU optimizers. Runs without a GPU, so CI checks the
// device formulas even where the kernels cannot run.
void check_rule_math() {
  namespace k = sc::kernels;
  const Index m = 6, n = 10;
  st::Hyper hp;
  hp.lr = 1e-2, hp.beta1 = 0.9, hp.beta2 = 0.99, hp.weight_decay = 0.1;
  const k::StepScalars p{float(hp.lr), float(hp.weight_decay), float(hp.beta1), float(hp.beta2), float(hp.eps),
                         nullptr, nullptr};
  // kind: 0 elementwise AdamW, 1 Lion, 2 MOGA-row, 3 MOGA-col, 4 sign descent
  auto run = [&](auto cpu, int kind, const char* name) {
    RowMat w = random(m, n, 11) * 0.1f, g(m, n);
    g.row(2).setZero();  // a zero row (MOGA-row's zero direction)
    RowMat wc = w, mom = RowMat::Zero(m, n), var = RowMat::Zero(m, n);
    st::ParamSet<float> ps;
    st::Gradients<float> gs;
    ps.add("w", st::Role::Hidden, wc.data(), m, n);
    gs.add(g.data(), m, n);
    auto cs = cpu.init(ps);
    for (long long t = 1; t <= 3; ++t) {
      g.noalias() = random(m, n, unsigned(100 + t));  // in place: gs holds g's data pointer
      g.row(2).setZero();
      cpu.step(ps, gs, cs);
      float bc1, bc2;
      k::bias_corrections(p, t, bc1, bc2);
      RowMat factor = RowMat::Ones(m, n);  // the normalization of MOGA's gradient
      float s = 1.0f;
      if (kind == 2) {
        for (Index i = 0; i < m; ++i) factor.row(i).setConstant(k::rsqrt_or_zero(g.row(i).squaredNorm()));
        s = float(st::RowNormalize::mean_normalized_scale(m, n));
      } else if (kind == 3) {
        for (Index j = 0; j < n; ++j) factor.col(j).setConstant(k::rsqrt_or_zero(g.col(j).squaredNorm()));
        s = float(st::ColNormalize::mean_normalized_scale(m, n));
      }
      const k::StepScalars q = kind == 2 || kind == 3 ? k::with_scale(p, s) : p;
      for (Index i = 0; i < w.size(); ++i) {
        const float gi = g.data()[i] * factor.data()[i];
        if (kind == 1)
          k::update<k::Rule::Lion>(w.data()[i], gi, mom.data() + i, var.data() + i, q, bc1, bc2);
        else if (kind == 4)
          k::update<k::Rule::Sign>(w.data()[i], gi, mom.data() + i, var.data() + i, q, bc1, bc2);
        else
          k::update<k::Rule::AdamW>(w.data()[i], gi, mom.data() + i, var.data() + i, q, bc1, bc2);
      }
    }
    const double e = rel(w, wc);
    EXPECT(e < 2e-6, "device rule math on the host, %s: relative difference %.3g from the CPU optimizer", name, e);
  };
  run(st::adamw(hp), 0, "AdamW");
  run(st::lion(hp), 1, "Lion");
  run(st::moga_row(hp), 2, "MOGA-row");
  run(st::moga_col(hp), 3, "MOGA-col");
  run(st::sign_descent(hp), 4, "sign descent");
}

int main() {
  check_device_forms();
  check_launch_tables();
  check_rule_math();
  std::printf("host-side checks: %d, failures %d\n", checks, failures);
  if (failures) return 1;
  const int devices = sc::device_count();
  if (devices == 0) {
    std::printf("steepest CUDA tests: no CUDA device visible (cudaGetDeviceCount reports none); "
                "compiled and linked, not run -- skipped\n");
    return 77;
  }
  cudaDeviceProp prop{};
  sc::check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  sc::Context exact(nullptr, sc::GemmPrecision::FP32);
  sc::Context fast;  // TF32 products

  // ---- norm policies: dualize on device == dualize on CPU ----
  for (auto [m, n] : std::vector<std::pair<Index, Index>>{{1, 1}, {1, 7}, {7, 1}, {33, 65}, {300, 1000}, {1000, 300}}) {
    check_dualize<st::RowNormalize>("RowNormalize", m, n, 1e-6, exact);
    check_dualize<st::SignNorm>("SignNorm", m, n, 0.0 + 1e-12, exact);
    check_dualize<st::ColNormalize>("ColNormalize", m, n, 1e-6, exact);
    check_dualize<st::MeanNormalized<st::RowNormalize>>("mean RowNormalize", m, n, 1e-6, exact);
    check_dualize<st::MeanNormalized<st::ColNormalize>>("mean ColNormalize", m, n, 1e-6, exact);
    check_dualize<st::VectorNorm<2>>("VectorNorm<2>", m, n, vector_norm_tolerance(m * n), exact, true);
    check_dualize<st::Spectral>("Spectral NS (fp32 GEMM)", m, n, 2e-4, exact);
    check_dualize<st::SpectralPolarExpress>("Polar Express (fp32 GEMM)", m, n, 2e-4, exact);
    check_dualize<st::Spectral>("Spectral NS (tf32 GEMM)", m, n, 3e-2, fast);
  }
  {  // exact polar factor (cuSOLVER) against the CPU's exact polar factor (Eigen SVD)
    for (auto [m, n] : std::vector<std::pair<Index, Index>>{{40, 90}, {90, 40}, {64, 64}}) {
      const RowMat g = random(m, n, 77u + unsigned(m));
      RowMat ref(m, n);
      st::SpectralExact::dualize(g, ref);
      Dev dg(g), dout(RowMat::Zero(m, n));
      sc::exact_polar(dg.view(), dout.view(), exact);
      const double e = rel(dout.host(), ref);
      EXPECT(e < 1e-4, "exact_polar %ldx%ld: %.3g", long(m), long(n), e);
      // Newton-Schulz (Polar Express, 8 steps, fp32 GEMMs) lands near the exact factor.
      Dev dns(RowMat::Zero(m, n));
      sc::newton_schulz<st::PolarExpressSchedule>(dg.view(), dns.view(), 8, exact);
      const double e2 = rel(dns.host(), ref);
      EXPECT(e2 < 2e-2, "Polar Express x8 vs exact polar %ldx%ld: %.3g", long(m), long(n), e2);
    }
  }
  {  // batched Newton-Schulz == one call per matrix (each with its own norm)
    const Index b = 5, m = 48, n = 80;
    RowMat all = random(b * m, n, 123);
    for (Index i = 0; i < b; ++i) all.middleRows(i * m, m) *= float(1 + 3 * i);  // different scales
    Dev dall(all), dout(RowMat::Zero(b * m, n)), done(RowMat::Zero(m, n));
    sc::Context classic(nullptr, sc::GemmPrecision::FP32);
    classic.engine = sc::GemmEngine::Classic, classic.gram = sc::GramProduct::Syrk;
    for (sc::Context* c : {&exact, &classic}) {
      sc::newton_schulz_batched<st::QuinticSchedule>(dall.p, dout.p, b, m, n, 5, *c);
      const RowMat batched = dout.host();
      for (Index i = 0; i < b; ++i) {
        sc::newton_schulz<st::QuinticSchedule>(sc::view(dall.p + i * m * n, m, n), done.view(), 5, *c);
        const double e = rel(batched.middleRows(i * m, m), done.host());
        EXPECT(e < 1e-5, "batched NS matrix %ld (%s): %.3g", long(i), c == &exact ? "Lt" : "classic+syrk", e);
      }
    }
  }
  {  // every precision x engine x Gram mode against the CPU's Newton-Schulz (double-checked in
     // FP32: the engines and Gram modes compute the same products, so they agree to rounding)
    struct Variant {
      const char* name;
      sc::GemmPrecision precision;
      sc::GemmEngine engine;
      sc::GramProduct gram;
      double tol;  // relative Frobenius distance to the CPU result
    };
    // Expected distances, from a host emulation of reduced-precision products
    // (scripts/cuda_ns_model.py --precision, these shapes): TF32 <= 7.4e-3, BF16 <= 4.8e-2 with
    // round-to-nearest inputs and <= 8.8e-2 if the hardware truncates. The tolerances leave ~2x
    // on top; a direction is all Newton-Schulz has to deliver.
    const Variant variants[] = {
        {"fp32 Lt gemm", sc::GemmPrecision::FP32, sc::GemmEngine::Lt, sc::GramProduct::Gemm, 2e-4},
        {"fp32 classic gemm", sc::GemmPrecision::FP32, sc::GemmEngine::Classic, sc::GramProduct::Gemm, 2e-4},
        {"fp32 Lt syrk", sc::GemmPrecision::FP32, sc::GemmEngine::Lt, sc::GramProduct::Syrk, 2e-4},
        {"fp32 classic syrk", sc::GemmPrecision::FP32, sc::GemmEngine::Classic, sc::GramProduct::Syrk, 2e-4},
        {"tf32 Lt gemm", sc::GemmPrecision::TF32, sc::GemmEngine::Lt, sc::GramProduct::Gemm, 3e-2},
        {"tf32 classic gemm", sc::GemmPrecision::TF32, sc::GemmEngine::Classic, sc::GramProduct::Gemm, 3e-2},
        {"tf32 Lt syrk", sc::GemmPrecision::TF32, sc::GemmEngine::Lt, sc::GramProduct::Syrk, 3e-2},
        {"bf16 Lt gemm", sc::GemmPrecision::BF16, sc::GemmEngine::Lt, sc::GramProduct::Gemm, 1.5e-1},
        {"bf16 classic gemm", sc::GemmPrecision::BF16, sc::GemmEngine::Classic, sc::GramProduct::Gemm, 1.5e-1},
    };
    for (const Variant& v : variants) {
      sc::Context c(nullptr, v.precision);
      c.engine = v.engine, c.gram = v.gram;
      for (auto [m, n] : std::vector<std::pair<Index, Index>>{{1, 1}, {5, 1}, {33, 65}, {65, 33}, {256, 256}, {129, 700}}) {
        const RowMat g = random(m, n, unsigned(5 * m + n));
        RowMat ref(m, n);
        st::Spectral::dualize(g, ref);
        Dev dg(g), dout(RowMat::Zero(m, n));
        st::Spectral::dualize(dg.view(), dout.view(), c);
        const double e = rel(dout.host(), ref);
        EXPECT(e < v.tol, "NS %s %ldx%ld: %.3g (tolerance %.1g)", v.name, long(m), long(n), e, v.tol);
        // In place (out == G) gives the same result, up to the run-to-run rounding of the
        // atomic norm reduction (which can flip a TF32/BF16 input rounding here and there).
        const double tol_inplace = v.precision == sc::GemmPrecision::FP32 ? 1e-5 : 0.1 * v.tol;
        st::Spectral::dualize(dg.view(), dg.view(), c);
        const double e2 = rel(dg.host(), dout.host());
        EXPECT(e2 < tol_inplace, "NS %s in place %ldx%ld: %.3g", v.name, long(m), long(n), e2);
      }
    }
  }
  {  // zero steps: the normalized input G / ||G||_F, also in place
    const RowMat g = random(20, 30, 9);
    Dev dg(g), dout(RowMat::Zero(20, 30));
    sc::newton_schulz<st::QuinticSchedule>(dg.view(), dout.view(), 0, exact);
    const RowMat ref = g / g.norm();
    EXPECT(rel(dout.host(), ref) < 1e-6, "NS with 0 steps");
    sc::newton_schulz<st::QuinticSchedule>(dg.view(), dg.view(), 0, exact);
    EXPECT(rel(dg.host(), ref) < 1e-6, "NS with 0 steps, in place");
  }
  {  // values and duals against the CPU
    const RowMat a = random(129, 77, 3);
    Dev d(a);
    EXPECT(std::abs(st::RowNormalize::value(d.view()) - st::RowNormalize::value(a)) < 1e-4 * st::RowNormalize::value(a),
           "RowNormalize::value");
    EXPECT(std::abs(st::ColNormalize::dual(d.view()) - st::ColNormalize::dual(a)) < 1e-4 * st::ColNormalize::dual(a),
           "ColNormalize::dual");
    EXPECT(std::abs(st::SignNorm::dual(d.view()) - st::SignNorm::dual(a)) < 1e-4 * st::SignNorm::dual(a),
           "SignNorm::dual");
  }
  {  // shape errors
    Dev a(RowMat::Zero(3, 4)), b(RowMat::Zero(4, 3));
    EXPECT(throws<st::shape_error>([&] { st::RowNormalize::dualize(a.view(), b.view(), exact); }),
           "shape mismatch must throw shape_error");
  }

  // ---- optimizers: device steps == CPU steps ----
  st::Hyper hp;
  hp.lr = 1e-2, hp.beta1 = 0.9, hp.beta2 = 0.99, hp.weight_decay = 0.1;
  // Several tensors in one launch, one that spans two launch tables (> 320 chunks of 64 Ki).
  const std::vector<std::pair<Index, Index>> many = {{7, 5}, {64, 64}, {1, 1000}, {300, 129}};
  const std::vector<std::pair<Index, Index>> huge = {{22000, 1000}, {5, 3}};
  double e = compare_steps(st::adamw(hp), sc::AdamW{hp}, many, 4, exact);
  EXPECT(e < 1e-5, "AdamW (many tensors): %.3g", e);
  e = compare_steps(st::adamw(hp), sc::AdamW{hp}, huge, 2, exact);
  EXPECT(e < 1e-5, "AdamW (two launch tables): %.3g", e);
  st::Hyper lh = hp;
  lh.lr = 1e-3, lh.beta2 = 0.99;
  e = compare_steps(st::lion(lh), sc::Lion{lh}, many, 4, exact);
  EXPECT(e < 1e-5, "Lion: %.3g", e);
  st::Hyper sh = hp;
  sh.lr = 1e-3;
  // The CPU sign_descent is the plain (not mean-normalized) sign step for matrices and vectors.
  e = compare_steps(st::sign_descent(sh), sc::SignDescent{sh}, many, 4, exact);
  EXPECT(e < 1e-6, "sign descent: %.3g", e);
  e = compare_steps(st::moga_row(hp), sc::MogaRow{hp}, many, 4, exact);
  EXPECT(e < 1e-5, "MOGA-row: %.3g", e);
  e = compare_steps(st::moga_col(hp), sc::MogaCol{hp}, many, 4, exact);
  EXPECT(e < 1e-5, "MOGA-col: %.3g", e);
  {  // role-aware rules: rescaled AdamW (1/n on hidden and output), MOGA with AdamW on vectors
    const std::vector<std::pair<Index, Index>> shapes = {{64, 32}, {48, 40}, {40, 70}, {48, 1}, {1, 48}};
    const std::vector<st::Role> roles = {st::Role::Hidden, st::Role::Embedding, st::Role::Output, st::Role::Vector,
                                         st::Role::Vector};
    e = compare_steps(st::adamw_rescaled(hp), sc::AdamWRescaled{hp}, shapes, 3, exact, roles);
    EXPECT(e < 1e-5, "rescaled AdamW (roles): %.3g", e);
    e = compare_steps(st::moga_row(hp), sc::MogaRow{hp}, shapes, 3, exact, roles);
    EXPECT(e < 1e-5, "MOGA-row (roles): %.3g", e);
    e = compare_steps(st::moga_col(hp), sc::MogaCol{hp}, shapes, 3, exact, roles);
    EXPECT(e < 1e-5, "MOGA-col (roles): %.3g", e);
  }
  st::Hyper mh;
  mh.lr = 2e-2, mh.beta1 = 0.95, mh.weight_decay = 0.01;
  e = compare_steps(st::muon_scion(mh), sc::Muon<>{[&] {
                      st::Hyper h = mh;
                      h.shape_factor = st::ShapeFactor::MuonMax1;
                      return h;
                    }()},
                    {{64, 64}, {96, 32}, {32, 160}, {64, 64}, {96, 32}, {64, 64}}, 3, exact);  // groups of 3, 2, 1
  EXPECT(e < 1e-4, "Muon (fp32 GEMM): %.3g", e);

  {  // Muon with TF32 and BF16 products still tracks the CPU (fp64-free fp32 reference) closely
    st::Hyper h = mh;
    h.shape_factor = st::ShapeFactor::MuonMax1;
    for (auto prec : {sc::GemmPrecision::TF32, sc::GemmPrecision::BF16}) {
      sc::Context c(nullptr, prec);
      e = compare_steps(st::muon_scion(mh), sc::Muon<>{h}, {{64, 64}, {96, 32}, {64, 64}}, 3, c);
      // Three updates lr * s * NS(.) (lr = 2e-2) add up to ~0.1 of the weights' norm here, so
      // NS's relative error (expected <= 7.4e-3 TF32, <= 8.8e-2 BF16, see above) shows at ~0.1
      // of that.
      const double tol = prec == sc::GemmPrecision::TF32 ? 5e-3 : 2e-2;
      EXPECT(e < tol, "Muon (%s GEMM): %.3g", prec == sc::GemmPrecision::TF32 ? "tf32" : "bf16", e);
    }
  }
  {  // no allocation after the first step: scratch, workspace and plans stay as they are
    st::Hyper h = mh;
    h.shape_factor = st::ShapeFactor::MuonMax1;
    sc::Context c;  // default: TF32, cuBLASLt
    const std::vector<std::pair<Index, Index>> shapes = {{64, 64}, {96, 32}, {32, 160}, {64, 64}};
    std::vector<std::unique_ptr<Dev>> dw, dg;
    std::vector<sc::Tensor> ts;
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      dw.push_back(std::make_unique<Dev>(random(shapes[i].first, shapes[i].second, unsigned(40 + i))));
      dg.push_back(std::make_unique<Dev>(random(shapes[i].first, shapes[i].second, unsigned(50 + i))));
      ts.push_back({dw.back()->p, dg.back()->p, shapes[i].first, shapes[i].second});
    }
    sc::Muon<> opt{h};
    auto state = opt.init(ts, c);
    opt.step(ts, state, c);
    auto snapshot = [&] {
      std::vector<const void*> p;
      for (auto& b : c.scratch_f32) p.push_back(b.get());
      p.push_back(c.lt_workspace.get());
      p.push_back(reinterpret_cast<const void*>(c.plans.size()));
      return p;
    };
    const auto after_first = snapshot();
    std::size_t free0 = 0, free1 = 0, total = 0;
    sc::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    sc::check(cudaMemGetInfo(&free0, &total), "cudaMemGetInfo");
    for (int t = 0; t < 3; ++t) opt.step(ts, state, c);
    sc::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    sc::check(cudaMemGetInfo(&free1, &total), "cudaMemGetInfo");
    EXPECT(snapshot() == after_first, "Muon: scratch buffers or GEMM plans changed after the first step");
    EXPECT(free1 == free0, "Muon: device free memory changed after the first step (%zu -> %zu)", free0, free1);
    EXPECT(state.steps(c) == 4, "Muon: 4 steps counted");
  }
  {  // Muon and Scion (constrained and unconstrained) over every role, hidden tensors batched by shape
    st::Hyper h;
    h.lr = 1e-2, h.beta1 = 0.9, h.weight_decay = 0.1;
    st::ScionRadii r;
    r.hidden = 3.0, r.embedding = 2.0, r.output = 50.0, r.vector = 1.5;
    const std::vector<std::pair<Index, Index>> shapes = {{64, 32}, {48, 40}, {64, 32}, {40, 70}, {48, 1}, {1, 48}};
    const std::vector<st::Role> roles = {st::Role::Hidden, st::Role::Embedding, st::Role::Hidden, st::Role::Output,
                                         st::Role::Vector, st::Role::Vector};
    st::Hyper mh2 = h;
    mh2.beta1 = 0.95;
    st::Hyper mh2_gpu = mh2;
    mh2_gpu.shape_factor = st::ShapeFactor::MuonMax1;
    e = compare_steps(st::muon_scion(mh2), sc::Muon<>{mh2_gpu}, shapes, 3, exact, roles);
    EXPECT(e < 1e-4, "Muon over every role (fp32 GEMM): %.3g", e);
    sc::Scion<> gs{h, r, true};
    e = compare_steps(st::scion(h, r), gs, shapes, 3, exact, roles);
    EXPECT(e < 1e-4, "Scion constrained (fp32 GEMM): %.3g", e);
    gs.constrained = false;
    e = compare_steps(st::scion_unconstrained(h, r), gs, shapes, 3, exact, roles);
    EXPECT(e < 1e-4, "Scion unconstrained (fp32 GEMM): %.3g", e);
  }
  {  // sign descent against a plain loop
    RowMat w = random(17, 9, 1), g = random(17, 9, 2);
    Dev dw(w), dg(g);
    sc::SignDescent sd{sh};
    std::vector<sc::Tensor> ts{{dw.p, dg.p, 17, 9}};
    auto s = sd.init(ts, exact);
    sd.step(ts, s, exact);
    RowMat ref = w;
    for (Index i = 0; i < ref.size(); ++i) {
      const float gi = g.data()[i];
      ref.data()[i] = ref.data()[i] * float(1 - sh.lr * sh.weight_decay) -
                      float(sh.lr) * (gi > 0 ? 1.0f : (gi < 0 ? -1.0f : 0.0f));
    }
    EXPECT(rel(dw.host(), ref) < 1e-6, "sign descent vs plain loop");
  }
  {  // bad tensor descriptions are refused at init with a clear error
    sc::AdamW opt{hp};
    EXPECT(throws<st::shape_error>([&] { opt.init({{nullptr, nullptr, -1, 3}}, exact); }),
           "init: a negative shape must throw shape_error");
    EXPECT(throws<std::invalid_argument>([&] { opt.init({{nullptr, nullptr, 2, 3}}, exact); }),
           "init: null pointers must throw invalid_argument");
  }
  {  // a NaN gradient: the step is skipped on the device, nothing changes, the flag is readable
    RowMat w = random(8, 8, 5), g = random(8, 8, 6);
    g(3, 4) = std::nanf("");
    Dev dw(w), dg(g);
    st::Hyper kh = hp;
    kh.on_non_finite = st::NonFinitePolicy::Skip;
    sc::AdamW opt{kh};
    std::vector<sc::Tensor> ts{{dw.p, dg.p, 8, 8}};
    auto s = opt.init(ts, exact);
    opt.step(ts, s, exact);
    EXPECT(s.nonfinite_seen(exact), "flag set");
    EXPECT(s.steps(exact) == 0, "step counter unchanged");
    EXPECT(rel(dw.host(), w) == 0.0, "parameters unchanged");
  }
  sc::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  std::printf("steepest CUDA tests: %d checks, %d failures\n", checks, failures);
  return failures ? 1 : 0;
}
