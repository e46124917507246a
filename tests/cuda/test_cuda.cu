// CUDA backend tests: the policies' device kernels and every optimizer on device memory,
// against the host backend on the same data, through the one optimizer API.
// Without a CUDA device the binary prints why and exits with 77, which CTest reports as skipped.
#include <steepest/steepest.hpp>
#include <steepest/cuda/cuda.cuh>
#include <steepest/cuda/exact_polar.cuh>

#include <climits>
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

// examples/custom_optimizer's chain: it runs on the device unchanged.
using NesterovRows = st::Chain<st::Momentum<st::MomentumKind::Nesterov>,
                               st::Dualize<st::MeanNormalized<st::RowNorm<2>>>, st::DecoupledStep>;
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

// ---- one API on both backends ------------------------------------------------------------------
// A small model with every kind of layer: hidden matrices of repeated and distinct shapes (Muon's
// batched groups), an embedding, a head, two vectors, a fused QKV split by rows (contiguous
// blocks), an output projection split by columns (strided blocks), and an empty tensor.
struct ModelSpec {
  std::string name;
  st::Role role;
  Index m, n;
  int blocks = 0;  // >0: add_blocks, rows(k) if by_rows else cols(k)
  bool by_rows = true;
};
const std::vector<ModelSpec>& model_spec() {
  static const std::vector<ModelSpec> spec = {
      {"h0", st::Role::Hidden, 64, 32},      {"h1", st::Role::Hidden, 64, 32},
      {"h2", st::Role::Hidden, 32, 160},     {"emb", st::Role::Embedding, 48, 40},
      {"head", st::Role::Output, 40, 70},    {"bias", st::Role::Vector, 48, 1},
      {"gain", st::Role::Vector, 1, 48},     {"qkv", st::Role::Hidden, 96, 32, 3, true},
      {"proj", st::Role::Hidden, 32, 96, 3, false}, {"none", st::Role::Hidden, 0, 7},
  };
  return spec;
}

template <class S, class Space>
void add_model(st::ParamSet<S, Space>& ps, st::Gradients<S, Space>& gs, const std::vector<float*>& w,
               const std::vector<float*>& g) {
  const auto& spec = model_spec();
  for (std::size_t i = 0; i < spec.size(); ++i) {
    const ModelSpec& s = spec[i];
    if (s.blocks)
      ps.add_blocks(s.name, s.role, w[i], s.m, s.n, s.by_rows ? st::Blocks::rows(s.blocks) : st::Blocks::cols(s.blocks));
    else
      ps.add(s.name, s.role, w[i], s.m, s.n);
    gs.add(g[i], s.m, s.n);
  }
}

/// A device copy of a bf16 array.
struct DevBf16 {
  Eigen::bfloat16* p = nullptr;
  std::size_t n = 0;
  explicit DevBf16(std::size_t count) : n(count) {
    sc::check(cudaMalloc(&p, sizeof(Eigen::bfloat16) * std::max<std::size_t>(1, n)), "cudaMalloc");
  }
  DevBf16(const DevBf16&) = delete;
  ~DevBf16() { cudaFree(p); }
  void upload(const std::vector<Eigen::bfloat16>& h) {
    sc::check(cudaMemcpy(p, h.data(), sizeof(Eigen::bfloat16) * n, cudaMemcpyHostToDevice), "cudaMemcpy");
  }
};

/// The model on the host and on the device, with the same weights; the gradients in fp32 and,
/// rounded, in bf16 (Gradients<Eigen::bfloat16> on both backends).
struct TwoBackends {
  std::vector<RowMat> w, g;                       // host weights and gradients
  std::vector<std::unique_ptr<Dev>> dw, dg;       // device copies
  std::vector<std::vector<Eigen::bfloat16>> gb;   // the gradients rounded to bf16
  std::vector<std::unique_ptr<DevBf16>> dgb;      // their device copies
  st::ParamSet<float> hp;
  st::Gradients<float> hg;
  st::Gradients<Eigen::bfloat16> hgb;
  st::ParamSet<float, sc::Device> dp;
  st::Gradients<float, sc::Device> dgs;
  st::Gradients<Eigen::bfloat16, sc::Device> dgbs;
  explicit TwoBackends(sc::Context& ctx) : dp(sc::Device{&ctx}) {
    const auto& spec = model_spec();
    std::vector<float*> hw, hgp, dwp, dgp;
    for (std::size_t i = 0; i < spec.size(); ++i) {
      w.push_back(random(spec[i].m, spec[i].n, unsigned(7 + i)) * 0.1f);
      g.push_back(RowMat::Zero(spec[i].m, spec[i].n));
    }
    for (std::size_t i = 0; i < spec.size(); ++i) {
      dw.push_back(std::make_unique<Dev>(w[i]));
      dg.push_back(std::make_unique<Dev>(g[i]));
      hw.push_back(w[i].data()), hgp.push_back(g[i].data()), dwp.push_back(dw[i]->p), dgp.push_back(dg[i]->p);
    }
    add_model(hp, hg, hw, hgp);
    add_model(dp, dgs, dwp, dgp);
    for (std::size_t i = 0; i < spec.size(); ++i) {
      gb.emplace_back(std::size_t(g[i].size()));
      dgb.push_back(std::make_unique<DevBf16>(gb.back().size()));
      hgb.add(gb.back().data(), spec[i].m, spec[i].n);
      dgbs.add(dgb.back()->p, spec[i].m, spec[i].n);
    }
  }
  /// New gradients for step t, on both backends.
  void gradients(int t, float poison = 0.0f) {
    for (std::size_t i = 0; i < g.size(); ++i) {
      g[i].noalias() = random(g[i].rows(), g[i].cols(), unsigned(1000 * t + i));  // in place: hg holds the pointer
      if (i == 2 && poison != 0.0f) g[i](1, 1) = poison;
      sc::check(cudaMemcpy(dg[i]->p, g[i].data(), sizeof(float) * std::size_t(g[i].size()), cudaMemcpyHostToDevice),
                "cudaMemcpy");
      for (Index k = 0; k < g[i].size(); ++k) gb[i][std::size_t(k)] = Eigen::bfloat16(g[i].data()[k]);
      dgb[i]->upload(gb[i]);
    }
  }
  double difference() const {
    double worst = 0;
    for (std::size_t i = 0; i < w.size(); ++i)
      if (w[i].size()) worst = std::max(worst, rel(dw[i]->host(), w[i]));
    return worst;
  }
};

/// `steps` steps of `opt` on both backends; then the device state is saved and loaded on the
/// host, the host state on the device, and both continue: every leg must stay together.
/// Bf16: both backends are given the gradients in bf16.
template <bool Bf16 = false, class Opt>
void check_backends(const char* name, Opt opt, sc::Context& ctx, double tol, int steps = 3) {
  TwoBackends mb(ctx);
  auto step_both = [&](auto& hs, auto& ds) {
    if constexpr (Bf16) {
      opt.step(mb.hp, mb.hgb, hs);
      opt.step(mb.dp, mb.dgbs, ds);
    } else {
      opt.step(mb.hp, mb.hg, hs);
      opt.step(mb.dp, mb.dgs, ds);
    }
  };
  auto hs = opt.init(mb.hp);
  auto ds = opt.init(mb.dp);
  for (int t = 0; t < steps; ++t) {
    mb.gradients(t);
    step_both(hs, ds);
  }
  const double e = mb.difference();
  EXPECT(e < tol, "%s: device vs host after %d steps: %.3g (tolerance %.1g)", name, steps, e, tol);
  EXPECT(ds.step == steps, "%s: device step counter %lld", name, ds.step);
  // GPU -> CPU and CPU -> GPU resumes: swap the states through files and continue.
  const std::string fd = "/tmp/steepest_cuda_test_device.state", fh = "/tmp/steepest_cuda_test_host.state";
  st::save(opt, ds, fd);
  st::save(opt, hs, fh);
  auto hs2 = opt.init(mb.hp);
  auto ds2 = opt.init(mb.dp);
  st::load(opt, hs2, fd);
  st::load(opt, ds2, fh);
  for (int t = steps; t < steps + 2; ++t) {
    mb.gradients(t);
    step_both(hs2, ds2);
  }
  const double e2 = mb.difference();
  EXPECT(e2 < 2 * tol, "%s: after swapping states across backends and 2 more steps: %.3g", name, e2);
  std::remove(fd.c_str()), std::remove(fh.c_str());
}

}  // namespace

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

/// A user's policy: sign descent under its own name, whose CUDA kernel is RowNorm<1>'s. Nothing
/// in the library knows it, so only cuda::register_geometry gives it a device form.
struct UserSign : st::RowNorm<1> {
  static std::string name() { return "user-sign"; }
};
namespace steepest {
template <>
struct has_cuda_kernel<UserSign> : std::true_type {};
}  // namespace steepest

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
                                   st::ScionUnconstrainedChain, st::AdamWChainIn<st::Bf16State>,
                                   st::MogaMomentumChainIn<st::Bf16State>>();
  EXPECT(n == 13, "device forms compiled: %d of 13", n);
}

// A transform's element as the device executor hands it to the kernel. The host's row
// normalization takes each row's factor as the pass reaches the row (RowFromGrad); the device
// takes them all in a prepass and passes them in (Row): that form is emulated here, the factors
// in `factors` (kept alive until the tables are flushed). Without it every emulated thread of a
// block summed the whole row again (52 s of CPU for this test; 6 s with it).
template <class E>
E device_form(E e, std::vector<std::vector<float>>&) {
  return e;
}
inline st::LayerDualize::Elem<float> device_form(st::LayerDualize::Elem<float> e,
                                                 std::vector<std::vector<float>>& factors) {
  using Mode = st::LayerDualize::Mode;
  using E = st::LayerDualize::Elem<float>;
  if (e.mode != Mode::RowFromGrad) return e;
  std::vector<float> f(std::size_t(e.rows));
  for (Index r = 0; r < e.rows; ++r)  // from the bf16 words when the gradient is bf16, as the host does
    f[std::size_t(r)] = e.grad_bf16 ? E::factor_of(st::eigen_detail::row_sumsq_bf16(e.grad_bf16 + r * e.cols, e.cols))
                                    : E::row_factor(e.grad + r * e.cols, e.cols);
  factors.push_back(std::move(f));
  return {Mode::Row, factors.back().data(), 1.0f};
}
template <class ChainT, std::size_t... I>
auto host_pack(st::Ctx<float>& ctx, typename ChainT::template LayerState<float>& ls,
               std::vector<std::vector<float>>& factors, std::index_sequence<I...>) {
  using Info = sc::detail::ChainInfo<ChainT>;
  return sc::kernels::make_pack(device_form(Info::template at<I>::elem(ctx, std::get<I>(ls)), factors)...);
}

// Every block of a launch table, every thread index: what chain_pass does, on the host.
template <class Table>
void run_table_on_host(const Table& tab, int blocks) {
  for (int b = 0; b < blocks; ++b)
    for (Index tid = 0; tid < sc::kernels::kChainThreads; ++tid)
      sc::kernels::chain_block(tab, b, tid, Index(sc::kernels::kChainThreads));
}

// Host-only: the device executor's one-pass form of every fusable chain -- its launch tables
// (layers split over tables and chunks, whole rows per chunk when a factor is per row) and its
// per-block body `chain_block`, run here over host memory for every block and thread index --
// against the CPU optimizer. Runs without a GPU, so CI checks the executor's indexing and the
// device arithmetic (the same Elem code) where the kernels cannot run. Bf16: the gradients are
// given in bf16 to both (the CPU optimizer's Gradients<Eigen::bfloat16>; the tables read
// __nv_bfloat16 and widen each entry, as the device pass does).
template <bool Bf16 = false, class Opt>
void check_executor_on_host(const char* name, Opt opt) {
  using In = std::conditional_t<Bf16, __nv_bfloat16, float>;
  using ChainT = typename Opt::chain;
  using Info = sc::detail::ChainInfo<ChainT>;
  // Shapes: a long row (several chunks of whole rows), many small layers (> one table), one
  // layer over two tables, a vector.
  std::vector<std::pair<Index, Index>> shapes = {{3, 70000}, {300, 129}, {1, 1}, {2600, 2600}, {48, 1}};
  for (int i = 0; i < 70; ++i) shapes.push_back({3 + i % 4, 5});
  std::vector<RowMat> w, g;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    w.push_back(random(shapes[i].first, shapes[i].second, unsigned(3 + i)) * 0.1f);
    g.push_back(RowMat(shapes[i].first, shapes[i].second));
  }
  std::vector<RowMat> we = w;  // stepped by the emulated executor
  std::vector<std::vector<Eigen::bfloat16>> gb(shapes.size());  // the bf16 gradients (Bf16)
  st::ParamSet<float> pc, pe;
  st::Gradients<float> gs;
  st::Gradients<Eigen::bfloat16> gsb;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const st::Role role = shapes[i].second == 1 ? st::Role::Vector : st::Role::Hidden;
    pc.add("p" + std::to_string(i), role, w[i].data(), shapes[i].first, shapes[i].second);
    pe.add("p" + std::to_string(i), role, we[i].data(), shapes[i].first, shapes[i].second);
    gs.add(g[i].data(), shapes[i].first, shapes[i].second);
    gb[i].resize(std::size_t(g[i].size()));
    gsb.add(gb[i].data(), shapes[i].first, shapes[i].second);
  }
  auto sc_ = opt.init(pc);
  auto se = opt.init(pe);
  bool tables_ok = true;
  int launches = 0;
  for (long long t = 1; t <= 3; ++t) {
    for (std::size_t i = 0; i < g.size(); ++i) {
      g[i].noalias() = random(g[i].rows(), g[i].cols(), unsigned(100 * t + i));
      if (g[i].rows() > 2) g[i].row(1).setZero();  // a zero row: zero direction
      for (Index k = 0; k < g[i].size(); ++k) gb[i][std::size_t(k)] = Eigen::bfloat16(g[i].data()[k]);
    }
    if constexpr (Bf16) opt.step(pc, gsb, sc_);
    else opt.step(pc, gs, sc_);
    std::vector<std::vector<float>> factors;  // per-row factors of the emulated prepass
    // (the packs point into the inner vectors, whose buffers stay put as the outer one grows)
    using Pack = decltype(host_pack<ChainT>(std::declval<st::Ctx<float>&>(), se.layers[0], factors,
                                            std::make_index_sequence<Info::size>{}));
    auto launch = [&](const sc::kernels::ChainTable<float, Pack, In>& tab, int blocks) {
      ++launches;
      tables_ok = tables_ok && blocks > 0 && blocks <= sc::kernels::kChainBlocks;
      for (int b = 0; b < blocks; ++b)
        tables_ok = tables_ok && tab.block_layer[b] < sc::kernels::ChainTable<float, Pack, In>::kMax;
      run_table_on_host(tab, blocks);
    };
    sc::kernels::TableBuilder<float, Pack, decltype(launch), In> builder(launch);
    for (std::size_t j = 0; j < pe.size(); ++j) {
      const auto& l = pe[j];
      st::Ctx<float> ctx{se.scratch.update[j], l.matrix(), opt.hp, t, opt.geometry_of(l), l.role != st::Role::Vector,
                         opt.lr_of(l, 1.0), opt.radius_of(l), se.scratch.workspace[j]};
      if constexpr (Bf16) ctx.grad_bf16 = reinterpret_cast<const std::uint16_t*>(gb[j].data());
      else ctx.grad = g[j].data();
      if (!ChainT::template can_fuse<float>(ctx.geometry)) {
        tables_ok = false;  // every layer of these chains fuses
        continue;
      }
      const bool by_rows = ChainT::needs_rows(ctx.geometry.fused());
      const In* gj;
      if constexpr (Bf16) gj = sc::detail::device_words(gb[j].data());
      else gj = g[j].data();
      builder.add(host_pack<ChainT>(ctx, se.layers[j], factors, std::make_index_sequence<Info::size>{}), gj, nullptr,
                  l.rows * l.cols, l.cols, by_rows);
    }
    builder.flush();
  }
  double worst = 0;
  for (std::size_t i = 0; i < w.size(); ++i) worst = std::max(worst, rel(we[i], w[i]));
  EXPECT(tables_ok && launches > 3, "%s: executor tables (%d launches)", name, launches);
  EXPECT(worst < 1e-6, "%s: executor's one-pass form on the host vs the CPU optimizer: %.3g", name, worst);
}

// The check pass over 80 gradients of G (one of 70000 entries per row: several tables): the
// first poisoned tensor is found, wherever its bad entry sits; `below` (the largest G under the
// bound, tensor 3) passes, 2^40 itself is refused (tensor 77), like NaN and Inf.
template <class G>
void check_finite_pass(const char* what, float below) {
  using Pack = sc::kernels::ElemPack<sc::kernels::FiniteCheck>;
  using In = sc::detail::device_word_t<G>;
  const float limit = std::ldexp(1.0f, st::gradient_limit_exponent<float>);
  for (int poisoned : {-1, 0, 41, 77}) {
    std::vector<std::vector<G>> g;
    std::vector<Index> cols;
    for (int i = 0; i < 80; ++i) {
      cols.push_back(i == 50 ? 70000 : 5);
      g.emplace_back(std::size_t((1 + i % 3) * cols.back()), G(1.0f));
    }
    g[3][0] = G(-below);
    if (poisoned >= 0)
      g[std::size_t(poisoned)][std::size_t(cols[std::size_t(poisoned)] - 1)] = G(poisoned == 77 ? -limit : std::nanf(""));
    if (poisoned == 41) g[77][0] = G(INFINITY);  // a later bad tensor does not hide the first
    int flag = INT_MAX;
    auto launch = [&](const sc::kernels::ChainTable<float, Pack, In>& tab, int blocks) { run_table_on_host(tab, blocks); };
    sc::kernels::TableBuilder<float, Pack, decltype(launch), In> builder(launch);
    for (std::size_t i = 0; i < g.size(); ++i)
      builder.add(sc::kernels::make_pack(sc::kernels::FiniteCheck{&flag, int(i)}), sc::detail::device_words(g[i].data()),
                  nullptr, Index(g[i].size()), cols[i], false);
    builder.flush();
    EXPECT(flag == (poisoned < 0 ? INT_MAX : poisoned), "%s: found %d, poisoned %d", what, flag, poisoned);
  }
}

void check_executor_on_host() {
  st::Hyper hp;
  hp.lr = 1e-2, hp.beta1 = 0.9, hp.beta2 = 0.99, hp.weight_decay = 0.1;
  check_executor_on_host("SGD", st::sgd(hp));
  check_executor_on_host("SGD Nesterov", st::sgd_nesterov(hp));
  check_executor_on_host("AdamW", st::adamw(hp));
  check_executor_on_host("rescaled AdamW", st::adamw_rescaled(hp));
  check_executor_on_host("sign descent", st::sign_descent(hp));
  check_executor_on_host("Lion", st::lion(hp));
  check_executor_on_host("MOGA-row", st::moga_row(hp));
  check_executor_on_host("MOGA-col", st::moga_col(hp));
  // Every vector by the whole-vector 2-normalization (the Global2 factor).
  auto sgd_l2 = st::sign_descent(hp);
  sgd_l2.roles[std::size_t(st::Role::Vector)].geometry = st::geometry<st::VectorNorm<2>>();
  sgd_l2.roles[std::size_t(st::Role::Hidden)].geometry = st::geometry<st::VectorNorm<2>>();
  check_executor_on_host("2-normalized SGD", sgd_l2);
  // bf16 gradients: the rules whose fused pass reads the gradient for factors too (MOGA-row,
  // MOGA-col, the global 2-norm) and plain ones, with fp32 and bf16 state.
  check_executor_on_host<true>("AdamW, bf16 gradients", st::adamw(hp));
  check_executor_on_host<true>("AdamW, bf16 gradients and state", st::adamw<st::Bf16State>(hp));
  check_executor_on_host<true>("Lion, bf16 gradients", st::lion(hp));
  check_executor_on_host<true>("MOGA-row, bf16 gradients", st::moga_row(hp));
  check_executor_on_host<true>("MOGA-col, bf16 gradients", st::moga_col(hp));
  check_executor_on_host<true>("MOGA-row momentum-only, bf16 gradients and state",
                               st::moga_row_momentum<st::Bf16State>(hp));
  check_executor_on_host<true>("2-normalized SGD, bf16 gradients", sgd_l2);

  // The gradient check's pass (the same tables, a read-only kernel), over fp32 gradients and
  // over bf16 ones (the tables read __nv_bfloat16, widened). The bound is |g| < 2^40: the
  // largest value below it in the gradient's type passes (float: nextafter; bf16: 2^40 - 2^32).
  const float limit = std::ldexp(1.0f, st::gradient_limit_exponent<float>);
  check_finite_pass<float>("gradient check pass", std::nextafter(limit, 0.0f));
  check_finite_pass<Eigen::bfloat16>("bf16 gradient check pass",
                                     limit - std::ldexp(1.0f, st::gradient_limit_exponent<float> - 8));
}


std::string second_unit_optimizer_name();  // second_unit.cu

int main() {
  EXPECT(second_unit_optimizer_name() == st::muon(st::Hyper{}, st::Hyper{}).name(), "another unit's Muon");
  check_device_forms();
  check_executor_on_host();
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

  // ---- optimizers: one API, both backends (device steps == host steps, resumes across) ----
  st::Hyper hp;
  hp.lr = 1e-2, hp.beta1 = 0.9, hp.beta2 = 0.99, hp.weight_decay = 0.1;
  st::Hyper lh = hp;
  lh.lr = 1e-3;
  check_backends("SGD", st::sgd(hp), exact, 1e-5);
  check_backends("SGD Nesterov", st::sgd_nesterov(hp), exact, 1e-5);
  check_backends("AdamW", st::adamw(hp), exact, 1e-5);
  check_backends("rescaled AdamW", st::adamw_rescaled(hp), exact, 1e-5);
  check_backends("sign descent", st::sign_descent(lh), exact, 1e-6);
  check_backends("Lion", st::lion(lh), exact, 1e-5);
  check_backends("MOGA-row", st::moga_row(hp), exact, 1e-5);
  check_backends("MOGA-col", st::moga_col(hp), exact, 1e-5);
  check_backends("MOGA-row momentum-only", st::moga_row_momentum(hp), exact, 1e-5);
  // bf16 state: the device runs the same Elem (scalar form, the same dither per entry); nvcc
  // contracts a*b+c into FMAs, so a moment can round to the other bf16 neighbour now and then.
  // The state swap below also moves BF16 buffers between the backends.
  check_backends("AdamW, bf16 state", st::adamw<st::Bf16State>(hp), exact, 1e-4);
  check_backends("MOGA-row momentum-only, bf16 state", st::moga_row_momentum<st::Bf16State>(hp), exact, 1e-4);
  check_backends("MOGA-row (Adam first)", st::moga_row<st::MogaOrder::AdamThenNormalize>(hp), exact, 1e-5);
  check_backends("MOGA-col (Adam first)", st::moga_col<st::MogaOrder::AdamThenNormalize>(hp), exact, 1e-5);
  // bf16 gradients on both backends: the fused pass and the factors' prepass widen as they read,
  // the strided blocks and Muon's staged layers start from a widened copy.
  check_backends<true>("AdamW, bf16 gradients", st::adamw(hp), exact, 1e-5);
  check_backends<true>("AdamW, bf16 gradients and state", st::adamw<st::Bf16State>(hp), exact, 1e-4);
  check_backends<true>("MOGA-row, bf16 gradients", st::moga_row(hp), exact, 1e-5);
  check_backends<true>("MOGA-col, bf16 gradients", st::moga_col(hp), exact, 1e-5);
  check_backends<true>("sign descent, bf16 gradients", st::sign_descent(lh), exact, 1e-6);
  st::Hyper mh;
  mh.lr = 2e-2, mh.beta1 = 0.95, mh.weight_decay = 0.01;
  check_backends("Muon + AdamW (fp32 GEMM)", st::muon(mh, hp), exact, 1e-4);
  check_backends<true>("Muon + AdamW, bf16 gradients (fp32 GEMM)", st::muon(mh, hp), exact, 1e-4);
  check_backends("Muon, Polar Express (fp32 GEMM)", st::muon<st::SpectralPolarExpress>(mh, hp), exact, 1e-4);
  check_backends("Muon-Scion (fp32 GEMM)", st::muon_scion(mh), exact, 1e-4);
  check_backends("MuonEq, rows normalized first (fp32 GEMM)", st::muon_eq(mh, hp), exact, 1e-4);
  check_backends("Muon+, rows and columns normalized after (fp32 GEMM)", st::muon_plus(mh, hp), exact, 1e-4);
  // The rules whose transforms reduce first (optim/reductions.hpp; device forms in cuda/rules.cuh).
  check_backends("NorMuon (fp32 GEMM)", st::normuon(mh, hp), exact, 1e-4);
  check_backends("AdaMuon (fp32 GEMM)", st::adamuon(mh, hp), exact, 1e-4);
  check_backends("PolarGrad (fp32 GEMM)", st::polargrad(mh, hp), exact, 1e-4);
  check_backends("cautious AdamW", st::cautious_adamw(hp), exact, 1e-5);
  check_backends<true>("cautious AdamW, bf16 gradients", st::cautious_adamw(hp), exact, 1e-5);
  {  // a user policy with a CUDA kernel is a per-layer geometry on device memory once registered
    auto opt = st::moga_row(hp);
    opt.roles[std::size_t(st::Role::Hidden)].geometry = st::geometry<st::MeanNormalized<UserSign>>();
    TwoBackends mb(exact);
    EXPECT(throws<std::invalid_argument>([&] { opt.init(mb.dp); }), "an unregistered user policy is refused at init");
    sc::register_geometry<UserSign>();
    check_backends("MOGA with a registered user geometry", opt, exact, 1e-5);
  }
  {  // a transform's own coefficients reach the device executor: two EMAs, 0.9 and 0.99
    using TwoEmas = st::Chain<st::Momentum<st::MomentumKind::EMA>, st::Momentum<st::MomentumKind::EMA>, st::DecoupledStep>;
    st::Optimizer<TwoEmas> two(hp);
    two.coefficients.at(1).beta1 = 0.99;
    check_backends("two EMAs with their own betas", two, exact, 1e-5);
  }
  {
    st::ScionRadii r;
    r.hidden = 3.0, r.embedding = 2.0, r.output = 50.0, r.vector = 1.5;
    check_backends("Scion (fp32 GEMM)", st::scion(hp, r), exact, 1e-4);
    check_backends("Scion unconstrained (fp32 GEMM)", st::scion_unconstrained(hp, r), exact, 1e-4);
  }
  check_backends("custom chain (examples/custom_optimizer)", st::Optimizer<NesterovRows>(hp), exact, 1e-5);
  {
    auto slow = st::moga_row(hp);
    slow.fuse = false;  // transform by transform on the device too
    check_backends("MOGA-row, unfused", slow, exact, 1e-5);
  }
  for (auto prec : {sc::GemmPrecision::TF32, sc::GemmPrecision::BF16}) {
    // Three updates lr * NS(.) add up to ~0.1 of the weights' norm, so NS's relative error
    // (<= 7.4e-3 TF32, <= 8.8e-2 BF16, see above) shows at ~0.1 of that.
    sc::Context c(nullptr, prec);
    check_backends(prec == sc::GemmPrecision::TF32 ? "Muon (tf32 GEMM)" : "Muon (bf16 GEMM)", st::muon(mh, hp), c,
                   prec == sc::GemmPrecision::TF32 ? 5e-3 : 2e-2);
  }
  {  // no allocation after the first step: scratch, workspace and plans stay as they are
    sc::Context c;  // default: TF32, cuBLASLt
    TwoBackends mb(c);
    auto opt = st::muon(mh, hp);
    auto ds = opt.init(mb.dp);
    mb.gradients(0);
    opt.step(mb.dp, mb.dgs, ds);
    auto snapshot = [&] {
      std::vector<const void*> p;
      for (auto& b : c.scratch_f32) p.push_back(b.get());
      p.push_back(c.lt_workspace.get());
      p.push_back(reinterpret_cast<const void*>(c.plans.size()));
      std::apply([&](auto&... part) { (p.push_back(part.scratch.u.get()), ...); }, ds.parts);
      return p;
    };
    const auto after_first = snapshot();
    std::size_t free0 = 0, free1 = 0, total = 0;
    sc::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    sc::check(cudaMemGetInfo(&free0, &total), "cudaMemGetInfo");
    for (int t = 0; t < 3; ++t) opt.step(mb.dp, mb.dgs, ds);
    sc::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    sc::check(cudaMemGetInfo(&free1, &total), "cudaMemGetInfo");
    EXPECT(snapshot() == after_first, "Muon: scratch buffers or GEMM plans changed after the first step");
    EXPECT(free1 == free0, "Muon: device free memory changed after the first step (%zu -> %zu)", free0, free1);
    EXPECT(ds.step == 4, "Muon: 4 steps counted");
  }
  {  // non-finite gradients: Error throws, Skip returns false; nothing changes either way
    TwoBackends mb(exact);
    st::Hyper kh = hp;
    auto opt = st::adamw(kh);
    auto ds = opt.init(mb.dp);
    mb.gradients(0, std::nanf(""));
    EXPECT(throws<st::non_finite_error>([&] { opt.step(mb.dp, mb.dgs, ds); }), "Error policy throws on the device");
    opt.hp.on_non_finite = st::NonFinitePolicy::Skip;
    EXPECT(!opt.step(mb.dp, mb.dgs, ds), "Skip policy returns false on the device");
    EXPECT(ds.step == 0 && mb.difference() == 0.0, "a refused device step changes nothing");
  }
  {  // a geometry without a CUDA form is refused at init, naming the layer
    TwoBackends mb(exact);
    auto opt = st::moga_row(hp);
    mb.dp.at("h2").geometry = st::geometry<st::RowNorm<3>>();
    EXPECT(throws<std::invalid_argument>([&] { opt.init(mb.dp); }), "RowNorm<3> has no CUDA form");
  }
  {  // operator norms of device layers equal the host's
    TwoBackends mb(exact);
    auto opt = st::scion(hp);
    const auto a = opt.operator_norms(mb.hp), b = opt.operator_norms(mb.dp);
    bool same = a.size() == b.size();
    for (std::size_t i = 0; same && i < a.size(); ++i)
      same = a[i].name == b[i].name && std::abs(a[i].value - b[i].value) <= 1e-5 * std::max(1.0, a[i].value);
    EXPECT(same, "operator_norms on the device");
  }
  sc::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  std::printf("steepest CUDA tests: %d checks, %d failures\n", checks, failures);
  return failures ? 1 : 0;
}
