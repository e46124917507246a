// steepest/cuda/executor.cuh -- the CUDA executor of the one optimizer core: cuda::Device.
//
//   st::cuda::Context ctx;                                   // stream + cuBLAS handles + scratch
//   st::ParamSet<float, st::cuda::Device> params(st::cuda::Device{&ctx});   // device pointers
//   params.add("w", st::Role::Hidden, d_w, m, n);
//   st::Gradients<float, st::cuda::Device> grads;  grads.add(d_g, m, n);
//   auto opt = st::moga_row(hp);                             // the same optimizers, chains, routes
//   auto state = opt.init(params);                           // state buffers on the device
//   opt.step(params, grads, state);                          // enqueued on ctx.stream()
//
// A step runs the chain the CPU runs, with the same per-element code (each transform's
// STEEPEST_HD Elem); what the executor adds is where and how often memory is read:
//   * a chain whose every transform has an Elem, on a contiguous layer whose geometry is
//     pointwise or a row / column / whole-matrix 2-normalization (the CPU's fused case), is one
//     pass over (g, state, W), many layers per launch (a multi-tensor table passed by value as
//     the kernel's parameter); a normalization's factors come from a read-only prepass over g;
//   * any other layer runs transform by transform on a running update u in scratch: runs of
//     consecutive Elem transforms are one kernel; a transform that applies the geometry runs the
//     direction the layer's handle leads to (cuda/geometry.cuh); a transform that reduces first
//     runs its DeviceRule (cuda/rules.cuh); layers of the same shape and geometry go together,
//     so Muon's polar factors are one batched Newton-Schulz per shape (with the schedule the
//     geometry handle carries);
//   * strided layers (blocks of a fused tensor) are gathered into scratch and written back.
// A transform with neither an Elem nor a DeviceRule, or a compile-time Dualize<N> whose N has no
// CUDA kernel, is a compile-time error on device memory; a run-time geometry without a device
// direction is refused at init, naming the layer.
//
// Non-finite gradients: with NonFinitePolicy::Error or Skip, a step runs one check kernel over
// every gradient and reads a 4-byte flag back (one host synchronization per step), so a refused
// step throws or returns false and changes nothing, exactly as on the CPU. Unchecked does not
// synchronize at all. Parameters are fp32; gradients fp32, or bf16 (Gradients<Eigen::bfloat16,
// Device>), widened to fp32 as the passes read them, as on the CPU: the fused pass and its
// factors' prepass read 2 bytes per entry, a staged layer's first update is the widened copy.
#pragma once

#include <algorithm>
#include <climits>
#include <cmath>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../optim/optimizer.hpp"
#include "geometry.cuh"
#include "rules.cuh"
#include "space.cuh"

namespace steepest {
namespace cuda {

namespace kernels {

/// A chain's per-element kernels as one trivially copyable aggregate (a std::tuple is not
/// trivially copyable, and this travels as a kernel parameter).
template <class... E>
struct ElemPack {};
template <class E, class... R>
struct ElemPack<E, R...> {
  E head;
  ElemPack<R...> tail;
};

inline ElemPack<> make_pack() { return {}; }
template <class E, class... R>
ElemPack<E, R...> make_pack(const E& e, const R&... r) {
  return {e, make_pack(r...)};
}

STEEPEST_HD inline void pack_begin_row(ElemPack<>&, Index) {}
template <class E, class... R>
STEEPEST_HD void pack_begin_row(ElemPack<E, R...>& k, Index r) {
  k.head.begin_row(r);
  pack_begin_row(k.tail, r);
}
template <class S>
STEEPEST_HD S pack_apply(const ElemPack<>&, S u, Index, Index) {
  return u;
}
template <class S, class E, class... R>
STEEPEST_HD S pack_apply(const ElemPack<E, R...>& k, S u, Index i, Index c) {
  return pack_apply<S>(k.tail, k.head.template apply<S>(u, i, c), i, c);
}

constexpr int kChainThreads = 256;
constexpr int kChainBlocks = 192;   // blocks per launch table
constexpr Index kChainChunk = 32768;  // entries per block (whole rows when a factor is per row)

/// A launch table: up to kMax layers and kChainBlocks (layer, chunk) blocks, passed by value.
/// In: what the pass reads, S or a bf16 gradient (__nv_bfloat16, widened to S as it is read).
template <class S, class Pack, class In = S>
struct ChainTable {
  static constexpr std::size_t kPerLayer = sizeof(Pack) + 2 * sizeof(void*) + 3 * sizeof(Index) + sizeof(int);
  static constexpr std::size_t kFixed = kChainBlocks * (sizeof(unsigned short) + sizeof(int)) + 64;
  static constexpr int kMax = int(std::min<std::size_t>(64, (4000 - kFixed) / kPerLayer));
  static_assert(kMax >= 1, "steepest::cuda: a chain's Elem kernels are too large for one launch table (4 KiB)");
  Pack ks[kMax];
  const In* g[kMax];  ///< input of the pass: the raw gradient, or the running update
  S* out[kMax];      ///< where the pass's result goes (null: nowhere, the chain ended in a step)
  Index n[kMax], cols[kMax], chunk[kMax];
  int by_rows[kMax];  ///< 1: call begin_row per entry (a per-row or per-column factor)
  unsigned short block_layer[kChainBlocks];
  int block_chunk[kChainBlocks];
};
static_assert(sizeof(ChainTable<float, ElemPack<>>) <= 4096, "steepest: a launch table must fit 4 KiB");

/// The body of a chain pass for one block of a table (host-callable, so the table logic is
/// checked without a GPU): entries [begin, end) of layer ti, by threads tid, tid + nthreads, ...
template <class S, class Pack, class In>
STEEPEST_HD void chain_block(const ChainTable<S, Pack, In>& tab, int block, Index tid, Index nthreads) {
  const int ti = tab.block_layer[block];
  const Index begin = Index(tab.block_chunk[block]) * tab.chunk[ti];
  const Index end = begin + tab.chunk[ti] < tab.n[ti] ? begin + tab.chunk[ti] : tab.n[ti];
  const In* g = tab.g[ti];  // may alias out (in place on the running update): not restrict
  S* out = tab.out[ti];
  Pack k = tab.ks[ti];
  if (tab.by_rows[ti]) {
    const Index cols = tab.cols[ti];
    for (Index i = begin + tid; i < end; i += nthreads) {
      const Index r = i / cols;
      Pack kr = k;
      pack_begin_row(kr, r);
      const S u = pack_apply<S>(kr, S(widen(g[i])), i, i - r * cols);
      if (out) out[i] = u;
    }
  } else {
    pack_begin_row(k, 0);  // a whole-matrix factor left in device memory is read once
    for (Index i = begin + tid; i < end; i += nthreads) {
      const S u = pack_apply<S>(k, S(widen(g[i])), i, 0);
      if (out) out[i] = u;
    }
  }
}

template <class S, class Pack, class In>
__global__ void __launch_bounds__(kChainThreads) chain_pass(ChainTable<S, Pack, In> tab) {
  chain_block(tab, int(blockIdx.x), Index(threadIdx.x), Index(blockDim.x));
}

/// Fills launch tables layer by layer and hands each full one to `launch(table, blocks)`.
template <class S, class Pack, class Launch, class In = S>
class TableBuilder {
 public:
  explicit TableBuilder(Launch launch) : launch_(launch) {}
  /// A layer of n entries in rows of `cols`; by_rows when its kernels need the row index.
  void add(const Pack& k, const In* g, S* out, Index n, Index cols, bool by_rows) {
    if (n <= 0) return;
    const Index chunk = by_rows ? std::max<Index>(1, kChainChunk / std::max<Index>(cols, 1)) * cols : kChainChunk;
    const Index chunks = (n + chunk - 1) / chunk;
    int slot = -1;
    for (Index c = 0; c < chunks; ++c) {
      if (blocks_ == kChainBlocks) flush(), slot = -1;
      if (slot < 0) {
        if (layers_ == Table::kMax) flush();
        slot = layers_++;
        tab_.ks[slot] = k, tab_.g[slot] = g, tab_.out[slot] = out;
        tab_.n[slot] = n, tab_.cols[slot] = cols, tab_.chunk[slot] = chunk, tab_.by_rows[slot] = by_rows ? 1 : 0;
      }
      tab_.block_layer[blocks_] = static_cast<unsigned short>(slot);
      tab_.block_chunk[blocks_] = int(c);
      ++blocks_;
    }
  }
  void flush() {
    if (blocks_) launch_(tab_, blocks_);
    layers_ = blocks_ = 0;
  }

 private:
  using Table = ChainTable<S, Pack, In>;
  Launch launch_;
  Table tab_{};
  int layers_ = 0, blocks_ = 0;
};

/// u = the rows x cols block of g with row stride `stride`, widened (u contiguous): the first
/// update of a staged layer whose gradient is bf16 (an fp32 gradient is copied by cudaMemcpy2D).
template <class In, class S>
__global__ void widen_rows(const In* __restrict__ g, Index stride, Index rows, Index cols, S* __restrict__ u) {
  const Index count = rows * cols;
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += Index(gridDim.x) * blockDim.x) {
    const Index r = i / cols;
    u[i] = S(widen(g[r * stride + (i - r * cols)]));
  }
}

/// 1 / sqrt(x), and 0 for x = 0 (a zero row or column has a zero direction), in place.
template <class F>  // (a template: defined in a header, so not once per translation unit)
__global__ void inv_sqrt_in_place(F* __restrict__ a, Index count) {
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += Index(gridDim.x) * blockDim.x)
    a[i] = a[i] > 0.0f ? 1.0f / sqrtf(a[i]) : 0.0f;
}

/// out[r] = 1 / ||row r of g||_2 (0 for a zero row), one block per row (S: float or a bf16
/// gradient).
template <class S>
__global__ void __launch_bounds__(kRowThreads) inv_row_norms(const S* __restrict__ g, Index m, Index n,
                                                             float* __restrict__ out) {
  const Index r = blockIdx.x;
  if (r >= m) return;
  const float acc = block_row_sumsq(g + r * n, n);
  if (threadIdx.x == 0) out[r] = acc > 0.0f ? 1.0f / sqrtf(acc) : 0.0f;
}

/// The gradient check as a per-element kernel: *flag = min(*flag, id) for an entry that is NaN,
/// Inf or of magnitude >= 2^gradient_limit_exponent<float> (NonFinitePolicy says why; flag
/// starts at INT_MAX), so the check of every gradient runs through the same multi-tensor tables
/// as the optimizer passes (many tensors per launch, read-only: no output). !(|u| < limit) is
/// also true for NaN.
struct FiniteCheck {
  int* flag;
  int id;
  static constexpr float kLimit = float(1ull << gradient_limit_exponent<float>);
  STEEPEST_HD void begin_row(Index) {}
  template <class P>
  STEEPEST_HD P apply(P u, Index, Index) const {
#ifdef __CUDA_ARCH__
    if (!(fabsf(float(u)) < kLimit)) atomicMin(flag, id);
#else
    if (!(std::fabs(float(u)) < kLimit) && id < *flag) *flag = id;
#endif
    return u;
  }
};

}  // namespace kernels

struct Device;

namespace detail {

template <class T>
struct is_dualize : std::false_type {};
template <class N>
struct is_dualize<Dualize<N>> : std::true_type {
  using policy = N;
};

using steepest::detail::applies_geometry_v;

/// A transform that runs on a device through its Elem alone (one that applies the geometry has
/// an Elem only for the fused forms, built from factors the executor computes).
template <class T>
inline constexpr bool device_elem_v = steepest::detail::has_elem<T, float>::value && !applies_geometry_v<T>;

template <class ChainT>
struct ChainInfo;
template <class... Ts>
struct ChainInfo<Chain<Ts...>> {
  using types = std::tuple<Ts...>;
  static constexpr std::size_t size = sizeof...(Ts);
  /// Some transform applies the layer's geometry: the layer needs its device direction.
  static constexpr bool applies_geometry = (applies_geometry_v<Ts> || ...);
  /// Some transform's Elem is built from the geometry's factors (computed before the pass).
  static constexpr bool geometry_factors =
      ((applies_geometry_v<Ts> && steepest::detail::has_elem<Ts, float>::value) || ...);
  template <std::size_t I>
  using at = std::tuple_element_t<I, types>;
  /// The end of the run of Elem transforms starting at I.
  static constexpr std::size_t segment_end(std::size_t i) {
    constexpr bool elem[] = {device_elem_v<Ts>...};
    while (i < size && elem[i]) ++i;
    return i;
  }
};

inline Context& context_of(const Device& d);

/// A table builder whose full tables launch chain_pass on `stream`; the passes read In.
template <class S, class Pack, class In = S>
auto table_builder(cudaStream_t stream) {
  auto launch = [stream](const kernels::ChainTable<S, Pack, In>& tab, int blocks) {
    kernels::chain_pass<S, Pack, In><<<unsigned(blocks), kernels::kChainThreads, 0, stream>>>(tab);
    check_launch("chain_pass (optimizer step)");
  };
  return kernels::TableBuilder<S, Pack, decltype(launch), In>(launch);
}

/// A gradient's entries as the device kernels read them: G itself, or a bf16 gradient as CUDA's
/// bf16 type (the same 16 bits as Eigen::bfloat16).
template <class G>
struct device_word {
  using type = G;
};
template <>
struct device_word<Eigen::bfloat16> {
  using type = __nv_bfloat16;
};
static_assert(sizeof(Eigen::bfloat16) == sizeof(__nv_bfloat16), "steepest: bf16 is 16 bits on both sides");
template <class G>
using device_word_t = typename device_word<G>::type;
template <class G>
const device_word_t<G>* device_words(const G* p) {
  return reinterpret_cast<const device_word_t<G>*>(p);
}

}  // namespace detail

/// CUDA device memory as a memory space (optim/space.hpp); `ctx` is the stream and cuBLAS
/// context every step of a parameter set in this space is enqueued on.
struct Device {
  /// The stream, handles and scratch every step in this space is enqueued on.
  Context* ctx = nullptr;

  /// A state buffer: an owning device array.
  template <class S>
  using buffer = DeviceArray<S>;
  /// A layer's weights: a device view with a row stride.
  template <class S>
  using view = LayerView<S>;
  /// A layer's workspace: the Context.
  template <class S>
  using workspace = Context;
  /// The executor's scratch, kept in the optimizer state.
  template <class S>
  using scratch = StepScratch<S>;
  /// "cuda", as checkpoints and messages name the space.
  static const char* name() { return "cuda"; }

  // ---- the entry points optim/optimizer.hpp calls ------------------------------------------

  /// Refuses, at init, a layer whose run-time geometry has no CUDA direction.
  template <class Opt, class S>
  static void check_layer(const Opt& opt, const Layer<S>& l) {
    static_assert(std::is_same_v<S, float>, "steepest::cuda::Device: the CUDA backend steps fp32 parameters");
    if constexpr (detail::ChainInfo<typename Opt::chain>::applies_geometry) {
      const Geometry g = opt.geometry_of(l);
      if (!direction_of(g))
        throw std::invalid_argument("parameter '" + l.name + "': geometry '" + g.name() +
                                    "' has no CUDA form (the device has sign, row / column / vector "
                                    "2-normalization, Newton-Schulz polar factors and the policies "
                                    "registered with cuda::register_geometry); route this layer "
                                    "elsewhere or step it on the host");
    }
  }

  /// The first tensor whose gradient has a NaN or Inf, or grads.size(): one read-only
  /// multi-tensor pass and one 4-byte read back (synchronizes the stream). bf16 gradients are
  /// tested as the floats they widen to, against the same bound.
  template <class S, class G>
  static std::size_t first_non_finite(const ParamSet<S, Device>& params, const Gradients<G, Device>& grads) {
    Context& ctx = detail::context_of(params.space());
    auto& flag = ctx.scratch_flag;
    int* f = flag.reserve(1);
    const int none = INT_MAX;
    check(cudaMemcpyAsync(f, &none, sizeof(int), cudaMemcpyHostToDevice, ctx.stream()), "cudaMemcpyAsync (check flag)");
    auto b = detail::table_builder<S, kernels::ElemPack<kernels::FiniteCheck>, detail::device_word_t<G>>(ctx.stream());
    for (std::size_t i = 0; i < grads.size(); ++i)
      if (!grads.skipped(i))
        b.add(kernels::make_pack(kernels::FiniteCheck{f, int(i)}), detail::device_words(grads.data(i)), nullptr,
              grads.rows(i) * grads.cols(i), grads.cols(i), false);
    b.flush();
    int h = none;
    check(cudaMemcpyAsync(&h, f, sizeof(int), cudaMemcpyDeviceToHost, ctx.stream()), "cudaMemcpyAsync (check flag)");
    check(cudaStreamSynchronize(ctx.stream()), "cudaStreamSynchronize (gradient check)");
    return h == none ? grads.size() : std::size_t(h);
  }

  /// A layer's weights as a host matrix (diagnostics: synchronizes).
  template <class S>
  static RowMatrix<S> layer_to_host(const ParamSet<S, Device>& params, const Layer<S>& l) {
    Context& ctx = detail::context_of(params.space());
    RowMatrix<S> h(l.rows, l.cols);
    if (h.size()) {
      check(cudaStreamSynchronize(ctx.stream()), "cudaStreamSynchronize (layer to host)");
      check(cudaMemcpy2D(h.data(), sizeof(S) * std::size_t(l.cols), l.data, sizeof(S) * std::size_t(l.stride),
                         sizeof(S) * std::size_t(l.cols), std::size_t(l.rows), cudaMemcpyDeviceToHost),
            "cudaMemcpy2D (layer to host)");
    }
    return h;
  }

  /// Step t of every layer of state `st` (optimizer `opt`); the checks ran before.
  template <class Opt, class S, class State, class G>
  static void run(const Opt& opt, ParamSet<S, Device>& params, const Gradients<G, Device>& grads, State& st,
                  long long t, bool fused, double lr_factor);
};

namespace detail {

inline Context& context_of(const Device& d) {
  if (d.ctx == nullptr)
    throw std::invalid_argument("steepest::cuda::Device has no Context: make the parameter set with "
                                "ParamSet<float, cuda::Device> params(cuda::Device{&ctx})");
  return *d.ctx;
}

template <class ChainT, class S, class Opt, class In = S>
struct Executor {
  using Info = ChainInfo<ChainT>;
  using LayerState = typename ChainT::template LayerState<S, Device>;
  using Job = LayerJob<S, In>;
  const Opt& opt;
  Context& cx;
  StepScratch<S>& scratch;
  std::vector<LayerState>& states;

  /// The context of transform `position` of the chain for this job: the optimizer's Hyper
  /// with the coefficients that transform owns (hp, which must outlive the context).
  Ctx<S, Device> ctx_of(const Job& job, const Hyper& hp) const {
    const Layer<S>& l = *job.l;
    Ctx<S, Device> c{scratch.none, LayerView<S>{job.w, l.rows, l.cols}, hp, job.t, job.geometry,
                     l.role != Role::Vector, job.lr, job.radius, cx};
    if constexpr (std::is_same_v<In, S>) c.grad = job.g;
    else c.grad_bf16 = reinterpret_cast<const std::uint16_t*>(job.g);
    return c;
  }

  template <class Pack, class From = S>
  auto builder() const {
    return table_builder<S, Pack, From>(cx.stream());
  }

  // ---- the fused path: the whole chain in one pass -----------------------------------------

  /// Transform I's kernel for this job: the geometry's Elem from the prepass's factors (on the
  /// device; null when the form needs none), or the transform's own, with its coefficients.
  template <class T, std::size_t I>
  auto elem_of(Job& job) {
    if constexpr (applies_geometry_v<T>) {
      return T::template elem_with_factors<S>(job.geometry.fused(), job.factors);
    } else {
      Ctx<S, Device> c = ctx_of(job, opt.hp);
      return steepest::detail::elem_one<T>(c, std::get<I>(states[job.j]), opt.coefficients[I]);
    }
  }
  template <std::size_t Begin, std::size_t... K>
  auto pack_of(Job& job, std::index_sequence<K...>) {
    return kernels::make_pack(elem_of<typename Info::template at<Begin + K>, Begin + K>(job)...);
  }

  void fused(std::vector<Job>& jobs) {
    if constexpr (ChainT::template fusable_v<S>) {
      if (jobs.empty()) return;
      // Factors of a normalization at the chain's head, from a read-only pass over g.
      std::size_t total = 0;
      for (const auto& job : jobs) total += std::size_t(factor_count(job));
      float* f = total ? scratch.factors.reserve(total) : nullptr;
      for (auto& job : jobs) {
        const Index count = factor_count(job);
        if (!count) continue;
        job.factors = f;
        const Layer<S>& l = *job.l;
        switch (job.geometry.fused()) {
          case FusedForm::Row2:
            kernels::inv_row_norms<<<unsigned(l.rows), kernels::kRowThreads, 0, cx.stream()>>>(job.g, l.rows, l.cols, f);
            break;
          case FusedForm::Col2: enqueue_col_sumsq(job.g, l.rows, l.cols, f, cx.stream()); break;
          default: enqueue_sumsq(job.g, l.rows * l.cols, f, cx.stream()); break;
        }
        if (job.geometry.fused() != FusedForm::Row2)
          kernels::inv_sqrt_in_place<<<kernels::grid_for(count), 256, 0, cx.stream()>>>(f, count);
        check_launch("optimizer step: geometry factors");
        f += count;
      }
      using Pack = decltype(pack_of<0>(jobs.front(), std::make_index_sequence<Info::size>{}));
      auto b = builder<Pack, In>();
      for (auto& job : jobs) {
        const Layer<S>& l = *job.l;
        const bool by_rows = ChainT::needs_rows(job.geometry.fused());
        b.add(pack_of<0>(job, std::make_index_sequence<Info::size>{}), job.g, nullptr, l.rows * l.cols, l.cols,
              by_rows);
      }
      b.flush();
    }
  }
  static Index factor_count(const Job& job) {
    if (!Info::geometry_factors) return 0;
    switch (job.geometry.fused()) {
      case FusedForm::Row2: return job.l->rows;
      case FusedForm::Col2: return job.l->cols;
      case FusedForm::Global2: return 1;
      default: return 0;
    }
  }

  // ---- the staged path: transform by transform on a running update -------------------------

  /// Layers of one shape and geometry, run in lockstep (their updates back to back in u).
  void staged(std::vector<Job>& jobs, bool from_gradient) {
    run_from<0>(jobs, from_gradient);
  }

  template <std::size_t I>
  void run_from(std::vector<Job>& jobs, bool from_gradient) {
    if constexpr (I < Info::size) {
      using T = typename Info::template at<I>;
      if constexpr (device_elem_v<T>) {
        constexpr std::size_t J = Info::segment_end(I);
        segment<I, J>(jobs, I == 0 && from_gradient);
        run_from<J>(jobs, from_gradient);
      } else {
        single<T, I>(jobs);
        run_from<I + 1>(jobs, from_gradient);
      }
    }
  }

  /// Transforms [I, J) (all with an Elem) as one pass over each layer's update, reading the
  /// gradient itself (read_gradient) or the running update.
  template <std::size_t I, std::size_t J>
  void segment(std::vector<Job>& jobs, bool read_gradient) {
    if (read_gradient) segment_pass<I, J, In>(jobs, [](const Job& job) { return job.g; });
    else segment_pass<I, J, S>(jobs, [](const Job& job) -> const S* { return job.u; });
  }
  template <std::size_t I, std::size_t J, class From, class Source>
  void segment_pass(std::vector<Job>& jobs, Source source) {
    using Pack = decltype(pack_of<I>(jobs.front(), std::make_index_sequence<J - I>{}));
    auto b = builder<Pack, From>();
    for (auto& job : jobs) {
      const Layer<S>& l = *job.l;
      b.add(pack_of<I>(job, std::make_index_sequence<J - I>{}), source(job), J == Info::size ? nullptr : job.u,
            l.rows * l.cols, l.cols, false);
    }
    b.flush();
  }

  template <class T, std::size_t I>
  void single(std::vector<Job>& jobs) {
    const Index m = jobs.front().l->rows, n = jobs.front().l->cols;
    if constexpr (has_device_rule<T>::value) {
      const Hyper hp = opt.coefficients[I].over(opt.hp);
      DeviceRule<T>::run(jobs, m, n, hp, [this](const Job& job) -> auto& { return std::get<I>(states[job.j]); }, cx);
    } else if constexpr (applies_geometry_v<T>) {  // the group's updates are back to back
      apply_direction(jobs.front().geometry, jobs.front().u, Index(jobs.size()), m, n, cx);
    } else if constexpr (is_dualize<T>::value) {
      using N = typename is_dualize<T>::policy;
      static_assert(has_cuda_kernel<N>::value,
                    "steepest: Dualize<N> on device memory: the norm policy N has no CUDA kernel. Write "
                    "NormKernel<N, CudaBackend> (and specialize has_cuda_kernel<N>), use a geometry "
                    "with one, or step this chain on host memory");
      if constexpr (has_cuda_kernel<N>::value)  // (no second error after the assertion's)
        for (auto& job : jobs) N::dualize(view(job.u, m, n), view(job.u, m, n), cx);
    } else {
      static_assert(dependent_false<T>,
                    "steepest: this transform has no CUDA form. Give it an Elem (a STEEPEST_HD "
                    "per-element kernel, optim/transforms.hpp), or a cuda::DeviceRule (cuda/rules.cuh), "
                    "to run it on device memory");
    }
  }
};

}  // namespace detail

template <class Opt, class S, class State, class G>
void Device::run(const Opt& opt, ParamSet<S, Device>& params, const Gradients<G, Device>& grads, State& st,
                 long long t, bool fused, double lr_factor) {
  static_assert(std::is_same_v<S, float>, "steepest::cuda::Device: the CUDA backend steps fp32 parameters");
  using ChainT = typename Opt::chain;
  using In = detail::device_word_t<G>;
  using Job = detail::LayerJob<S, In>;
  Context& cx = detail::context_of(params.space());
  StepScratch<S>& scratch = st.scratch;
  detail::Executor<ChainT, S, Opt, In> ex{opt, cx, scratch, st.layers};

  // Sort the layers: fused (one pass), or staged in groups of one shape and geometry.
  std::vector<Job> one_pass;
  std::vector<std::vector<Job>> groups;
  std::size_t staged_entries = 0, strided_entries = 0;
  for (std::size_t j = 0; j < st.layers.size(); ++j) {
    const Layer<S>& l = params[st.index[j]];
    if (grads.skipped(l.tensor)) {  // no gradient: nothing of this layer changes but its count
      ++st.skipped[j];
      continue;
    }
    if (l.rows * l.cols == 0) continue;
    Job job{j, &l, detail::device_words(grads.data(l.tensor)) + l.offset, l.data, nullptr, nullptr,
            opt.lr_of(l, lr_factor), opt.radius_of(l), opt.geometry_of(l), t - st.skipped[j]};
    if (!l.contiguous()) strided_entries += std::size_t(l.rows * l.cols);
    if (fused && l.contiguous() && ChainT::template can_fuse<S>(job.geometry)) {
      one_pass.push_back(job);
      continue;
    }
    staged_entries += std::size_t(l.rows * l.cols);
    auto same = [&](const std::vector<Job>& g) {
      const Layer<S>& f = *g.front().l;
      return f.rows == l.rows && f.cols == l.cols && f.contiguous() == l.contiguous() &&
             g.front().geometry == job.geometry;
    };
    auto it = std::find_if(groups.begin(), groups.end(), same);
    if (it == groups.end()) groups.emplace_back(1, job);
    else it->push_back(job);
  }

  // Scratch for the staged layers' updates and the strided layers' weights (grows only).
  S* u = staged_entries ? scratch.u.reserve(staged_entries) : nullptr;
  S* wtmp = strided_entries ? scratch.w.reserve(strided_entries) : nullptr;
  const cudaStream_t s = cx.stream();
  const auto pitch = [](Index c) { return sizeof(S) * std::size_t(c); };
  std::vector<Job*> strided;  // (fused layers are contiguous by construction)
  for (auto& g : groups)
    for (auto& job : g) {
      const Layer<S>& l = *job.l;
      job.u = u;
      u += l.rows * l.cols;
      if (!l.contiguous()) {  // gather W; the Elem kernels index it flat
        job.w = wtmp;
        wtmp += l.rows * l.cols;
        check(cudaMemcpy2DAsync(job.w, pitch(l.cols), l.data, pitch(l.stride), pitch(l.cols), std::size_t(l.rows),
                                cudaMemcpyDeviceToDevice, s),
              "cudaMemcpy2DAsync (gather a strided layer)");
        strided.push_back(&job);
      }
    }

  ex.fused(one_pass);
  for (auto& g : groups) {
    // The first pass reads the gradient itself when it can (contiguous, and the chain starts with
    // an Elem); otherwise u starts as a copy of it (widened, for a bf16 gradient).
    const bool contiguous = g.front().l->contiguous();
    const bool direct = contiguous && detail::device_elem_v<typename detail::ChainInfo<ChainT>::template at<0>>;
    if (!direct)
      for (auto& job : g) {
        const Layer<S>& l = *job.l;
        if constexpr (std::is_same_v<In, S>) {
          check(cudaMemcpy2DAsync(job.u, pitch(l.cols), job.g, pitch(l.stride), pitch(l.cols), std::size_t(l.rows),
                                  cudaMemcpyDeviceToDevice, s),
                "cudaMemcpy2DAsync (gradient to update)");
        } else {
          kernels::widen_rows<<<kernels::grid_for(l.rows * l.cols), 256, 0, s>>>(job.g, l.stride, l.rows, l.cols, job.u);
          check_launch("widen_rows (bf16 gradient to update)");
        }
      }
    ex.staged(g, direct);
  }
  for (auto* job : strided) {  // write the strided layers back
    const Layer<S>& l = *job->l;
    check(cudaMemcpy2DAsync(l.data, pitch(l.stride), job->w, pitch(l.cols), pitch(l.cols), std::size_t(l.rows),
                            cudaMemcpyDeviceToDevice, s),
          "cudaMemcpy2DAsync (write a strided layer back)");
  }
}

}  // namespace cuda
}  // namespace steepest
