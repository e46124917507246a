// steepest/cuda/optimizers.cuh -- fused optimizer steps on the GPU.
//
// The same rules and the same Hyper as the CPU optimizers (optim/optimizers.hpp), with fp32
// parameters, gradients and state in device memory:
//   AdamW, Lion, sign descent   one pass over (w, g, state) for *many tensors per launch*
//                               (multi-tensor apply: a launch table of up to 32 tensors and
//                               320 chunks of 64 Ki elements, passed by value as the kernel's
//                               parameter, so there is no host->device copy per step)
//   MOGA-col                    column sums of squares, then one fused pass
//   MOGA-row                    one block per row: row norm, normalize, Adam, scale, step in
//                               one kernel (the row is re-read from L1/L2, not DRAM)
//   Muon                        momentum kernel -> Newton-Schulz on cuBLAS(Lt) -> step kernel
//   Scion                       per role: EMA -> LMO (batched Newton-Schulz, columns, sign,
//                               RMS) -> constrained or decoupled step
//
// No host synchronization inside a step: the step counter lives on the device, and with
// NonFinitePolicy::Skip a check kernel sets a device flag that every update kernel reads (a
// flagged step changes nothing, including the counter). NonFinitePolicy::Error cannot throw
// without synchronizing, so on the GPU it behaves as Skip and `nonfinite_seen()` (which does
// synchronize) reports it. Unchecked skips the check pass.
#pragma once

#include <cstdint>
#include <vector>

#include "../optim/hyper.hpp"
#include "../optim/optimizers.hpp"
#include "../optim/params.hpp"
#include "norms.cuh"
#include "../polar/coefficients.hpp"
#include "newton_schulz.cuh"

namespace steepest {
namespace cuda {

/// One parameter tensor on the device: w and g are rows x cols row-major fp32. `role` matters
/// to Scion only (it picks the tensor's geometry and radius); the other device optimizers apply
/// their one rule to every tensor they are given.
struct Tensor {
  float* w;
  const float* g;
  Index rows, cols;
  Role role = Role::Hidden;
  Index size() const { return rows * cols; }
};

namespace kernels {

constexpr int kMaxTensors = 32;
constexpr int kMaxBlocks = 320;
constexpr Index kChunk = 65536;
constexpr int kMtThreads = 512;
constexpr int kIlp = 4;

struct MultiTensorTable {
  float* w[kMaxTensors];
  const float* g[kMaxTensors];
  float* s0[kMaxTensors];  // first state buffer (Adam m, Lion m), or null
  float* s1[kMaxTensors];  // second state buffer (Adam v), or null
  Index n[kMaxTensors];
  float scale[kMaxTensors];  // width-aware factor s(m, n) of each tensor's update (1: none)
  unsigned char block_tensor[kMaxBlocks];
  int block_chunk[kMaxBlocks];
};

// The table travels as a kernel parameter; 4 KiB is the limit on every CUDA version and GPU.
static_assert(sizeof(MultiTensorTable) + 64 <= 4096, "steepest: the multi-tensor table must fit the 4 KiB kernel parameter space");

struct StepScalars {
  float lr, wd, b1, b2, eps;
  const long long* t;     // device step counter (steps taken so far)
  const int* skip;        // device flag: nonzero = skip this step
};

enum class Rule { AdamW, Lion, Sign };

// The per-element math below is __host__ __device__ so the CUDA test binary checks it against
// the CPU optimizers on the host, where CI runs it without a GPU; the kernels only add the
// indexing around it.

/// Adam's bias corrections 1 - b1^t, 1 - b2^t for step t (1-based), in double as the CPU path
/// computes them (1 - beta^t loses digits in fp32 when beta is near 1).
__host__ __device__ inline void bias_corrections(const StepScalars& p, long long t, float& bc1, float& bc2) {
  bc1 = float(1.0 - pow(double(p.b1), double(t)));
  bc2 = float(1.0 - pow(double(p.b2), double(t)));
}

/// A width-aware factor s(m, n) multiplies the update, not the decay: w (1 - lr wd) - lr s u is
/// the per-element rule with lr' = lr s and wd' = wd / s.
__host__ __device__ inline StepScalars with_scale(StepScalars p, float scale) {
  p.wd = scale > 0.0f ? p.wd / scale : 0.0f;
  p.lr = p.lr * scale;
  return p;
}

/// 1 / sqrt(x), and 0 for x = 0 (a zero row or column has a zero direction).
__host__ __device__ inline float rsqrt_or_zero(float x) {
#ifdef __CUDA_ARCH__
  return x > 0.0f ? rsqrtf(x) : 0.0f;
#else
  return x > 0.0f ? 1.0f / sqrtf(x) : 0.0f;
#endif
}

// The per-element update of each rule. Plain scalar code on purpose: the loop is memory-bound,
// and the compiler keeps it to one load and one store per stream.
template <Rule R>
__host__ __device__ __forceinline__ void update(float& w, float g, float* m, float* v, const StepScalars& p, float bc1,
                                                float bc2) {
  float u;
  if (R == Rule::AdamW) {
    const float mm = p.b1 * *m + (1.0f - p.b1) * g;
    const float vv = p.b2 * *v + (1.0f - p.b2) * g * g;
    *m = mm, *v = vv;
    u = (mm / bc1) / (sqrtf(vv / bc2) + p.eps);
  } else if (R == Rule::Lion) {
    const float c = p.b1 * *m + (1.0f - p.b1) * g;
    u = c > 0.0f ? 1.0f : (c < 0.0f ? -1.0f : 0.0f);
    *m = p.b2 * *m + (1.0f - p.b2) * g;
  } else {
    u = g > 0.0f ? 1.0f : (g < 0.0f ? -1.0f : 0.0f);
  }
  w = w * (1.0f - p.lr * p.wd) - p.lr * u;
}

/// True when p is 16-byte aligned (or null: an absent state stream does not block float4 access).
__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

template <Rule R>
__global__ void __launch_bounds__(kMtThreads) multi_tensor_step(MultiTensorTable tab, StepScalars p) {
  if (*p.skip) return;
  const int ti = tab.block_tensor[blockIdx.x];
  const Index begin = Index(tab.block_chunk[blockIdx.x]) * kChunk;
  const Index n = tab.n[ti];
  const Index end = begin + kChunk < n ? begin + kChunk : n;
  float bc1, bc2;
  bias_corrections(p, *p.t + 1, bc1, bc2);
  const StepScalars q = with_scale(p, tab.scale[ti]);  // scale 1 leaves lr and wd as they are
  float* __restrict__ w = tab.w[ti];
  const float* __restrict__ g = tab.g[ti];
  float* __restrict__ m = tab.s0[ti];
  float* __restrict__ v = tab.s1[ti];
  Index i0 = begin;
  if (aligned16(w) && aligned16(g) && aligned16(m) && aligned16(v)) {
    // 16-byte loads and stores: a quarter of the memory instructions, and kIlp float4s in flight
    // per thread (begin is a multiple of kChunk, so every float4 here is aligned). This is the
    // usual way a streaming kernel gets close to copy bandwidth.
    const Index vend = begin + (end - begin) / 4 * 4;
    for (Index base = begin + Index(threadIdx.x) * 4; base < vend; base += Index(kMtThreads) * 4 * kIlp) {
      float4 wr[kIlp], gr[kIlp], mr[kIlp], vr[kIlp];
#pragma unroll
      for (int j = 0; j < kIlp; ++j) {
        const Index i = base + Index(j) * kMtThreads * 4;
        wr[j] = gr[j] = mr[j] = vr[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (i < vend) {
          wr[j] = *reinterpret_cast<const float4*>(w + i);
          gr[j] = *reinterpret_cast<const float4*>(g + i);
          if (m) mr[j] = *reinterpret_cast<const float4*>(m + i);
          if (v) vr[j] = *reinterpret_cast<const float4*>(v + i);
        }
      }
#pragma unroll
      for (int j = 0; j < kIlp; ++j) {
        const Index i = base + Index(j) * kMtThreads * 4;
        if (i >= vend) continue;
        update<R>(wr[j].x, gr[j].x, &mr[j].x, &vr[j].x, q, bc1, bc2);
        update<R>(wr[j].y, gr[j].y, &mr[j].y, &vr[j].y, q, bc1, bc2);
        update<R>(wr[j].z, gr[j].z, &mr[j].z, &vr[j].z, q, bc1, bc2);
        update<R>(wr[j].w, gr[j].w, &mr[j].w, &vr[j].w, q, bc1, bc2);
        *reinterpret_cast<float4*>(w + i) = wr[j];
        if (m) *reinterpret_cast<float4*>(m + i) = mr[j];
        if (v) *reinterpret_cast<float4*>(v + i) = vr[j];
      }
    }
    i0 = vend;  // the last (end - begin) % 4 elements go through the scalar loop
  }
  // Scalar path (unaligned tensors, and the tail): kIlp elements per thread per iteration, all
  // loads issued before any arithmetic, for more bytes in flight per thread.
  for (Index base = i0 + threadIdx.x; base < end; base += Index(kMtThreads) * kIlp) {
    float wr[kIlp], gr[kIlp], mr[kIlp], vr[kIlp];
#pragma unroll
    for (int j = 0; j < kIlp; ++j) {
      const Index i = base + Index(j) * kMtThreads;
      wr[j] = gr[j] = mr[j] = vr[j] = 0.0f;
      if (i < end) {
        wr[j] = w[i], gr[j] = g[i];
        if (m) mr[j] = m[i];
        if (v) vr[j] = v[i];
      }
    }
#pragma unroll
    for (int j = 0; j < kIlp; ++j) {
      const Index i = base + Index(j) * kMtThreads;
      if (i >= end) continue;
      update<R>(wr[j], gr[j], &mr[j], &vr[j], q, bc1, bc2);
      w[i] = wr[j];
      if (m) m[i] = mr[j];
      if (v) v[i] = vr[j];
    }
  }
}

/// Sets *flag when any entry of any tensor in the table is NaN or Inf.
__global__ void __launch_bounds__(kMtThreads) multi_tensor_check(MultiTensorTable tab, int* flag) {
  const int ti = tab.block_tensor[blockIdx.x];
  const Index begin = Index(tab.block_chunk[blockIdx.x]) * kChunk;
  const Index n = tab.n[ti];
  const Index end = begin + kChunk < n ? begin + kChunk : n;
  bool bad = false;
  for (Index i = begin + threadIdx.x; i < end; i += kMtThreads) bad |= !isfinite(tab.g[ti][i]);
  if (__syncthreads_or(bad) && threadIdx.x == 0) atomicExch(flag, 1);
}

/// After a step: t += 1 unless skipped; the flag is left for the caller to read and is cleared
/// at the start of the next step.
__global__ void finish_step(long long* t, const int* skip) {
  if (!*skip) *t += 1;
}

/// MOGA-row (normalize, then Adam, then s(m, n), then the decoupled step), one block per row.
__global__ void __launch_bounds__(kRowThreads) moga_row_step(float* __restrict__ w, const float* __restrict__ g,
                                                             float* __restrict__ m, float* __restrict__ v, Index rows,
                                                             Index cols, float scale, StepScalars p) {
  if (*p.skip) return;
  const Index r = blockIdx.x;
  if (r >= rows) return;
  const Index off = r * cols;
  const float acc = block_row_sumsq(g + off, cols);
  const float inv = rsqrt_or_zero(acc);
  float bc1, bc2;
  bias_corrections(p, *p.t + 1, bc1, bc2);
  const StepScalars q = with_scale(p, scale);
  for (Index j = threadIdx.x; j < cols; j += blockDim.x) {
    float wi = w[off + j];
    update<Rule::AdamW>(wi, g[off + j] * inv, m + off + j, v + off + j, q, bc1, bc2);
    w[off + j] = wi;
  }
}

/// MOGA-col's second pass: normalize each column by its norm (from the first pass), Adam,
/// s(m, n), decoupled step; elementwise over the whole matrix.
__global__ void moga_col_step(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ m,
                              float* __restrict__ v, Index rows, Index cols, const float* __restrict__ colsq,
                              float scale, StepScalars p) {
  if (*p.skip) return;
  float bc1, bc2;
  bias_corrections(p, *p.t + 1, bc1, bc2);
  const StepScalars q = with_scale(p, scale);
  const Index count = rows * cols;
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += Index(gridDim.x) * blockDim.x) {
    const float inv = rsqrt_or_zero(colsq[i % cols]);
    float wi = w[i];
    update<Rule::AdamW>(wi, g[i] * inv, m + i, v + i, q, bc1, bc2);
    w[i] = wi;
  }
}

/// EMA momentum m = b m + (1-b) g, and u = (1-b) g + b m (Muon's Nesterov form) or u = m
/// (Scion's plain EMA); u may be null (the caller reads m itself).
__global__ void ema_momentum(const float* __restrict__ g, float* __restrict__ m, float* __restrict__ u, Index count,
                             float b, bool nesterov, const int* skip) {
  if (*skip) return;
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += Index(gridDim.x) * blockDim.x) {
    const float mm = b * m[i] + (1.0f - b) * g[i];
    m[i] = mm;
    if (u) u[i] = nesterov ? (1.0f - b) * g[i] + b * mm : mm;
  }
}

/// w = w (1 - lr wd) - lr s d.
__global__ void apply_direction(float* __restrict__ w, const float* __restrict__ d, Index count, float lr, float wd,
                                float s, const int* skip) {
  if (*skip) return;
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += Index(gridDim.x) * blockDim.x)
    w[i] = w[i] * (1.0f - lr * wd) - lr * s * d[i];
}

}  // namespace kernels

/// State of a device optimizer: per-tensor buffers, the step counter and the skip flag, all in
/// device memory, allocated by init() and never afterwards.
class DeviceState {
 public:
  std::vector<Buffer<float>> s0, s1;
  // Muon: tensors grouped by shape (indices into the tensor list) and one contiguous buffer of
  // directions per group, so each group's Newton-Schulz is one batched call.
  std::vector<std::vector<std::size_t>> groups;
  std::vector<Buffer<float>> group_u;
  Buffer<long long> t;
  Buffer<int> skip;
  std::vector<std::pair<Index, Index>> shapes;
  /// Steps taken (synchronizes the stream: for logging and tests, not inside a training step).
  long long steps(Context& ctx) {
    long long h = 0;
    check(cudaMemcpyAsync(&h, t.get(), sizeof h, cudaMemcpyDeviceToHost, ctx.stream()), "cudaMemcpyAsync");
    check(cudaStreamSynchronize(ctx.stream()), "cudaStreamSynchronize");
    return h;
  }
  /// Whether the last step was skipped for a non-finite gradient (synchronizes).
  bool nonfinite_seen(Context& ctx) {
    int h = 0;
    check(cudaMemcpyAsync(&h, skip.get(), sizeof h, cudaMemcpyDeviceToHost, ctx.stream()), "cudaMemcpyAsync");
    check(cudaStreamSynchronize(ctx.stream()), "cudaStreamSynchronize");
    return h != 0;
  }
};

namespace detail {

inline void init_state(DeviceState& st, const std::vector<Tensor>& ts, int buffers, Context& ctx) {
  // Bad tensor descriptions are refused before anything is allocated.
  for (std::size_t i = 0; i < ts.size(); ++i) {
    if (ts[i].rows < 0 || ts[i].cols < 0)
      throw shape_error("cuda optimizer init: tensor " + std::to_string(i) + " has negative shape " +
                        shape_string(ts[i].rows, ts[i].cols));
    if (ts[i].size() > 0 && (ts[i].w == nullptr || ts[i].g == nullptr))
      throw std::invalid_argument("cuda optimizer init: tensor " + std::to_string(i) +
                                  " has a null parameter or gradient pointer");
  }
  st.s0.clear(), st.s1.clear(), st.shapes.clear(), st.groups.clear(), st.group_u.clear();
  for (const Tensor& x : ts) {
    st.shapes.emplace_back(x.rows, x.cols);
    const std::size_t n = std::size_t(x.size());
    st.s0.emplace_back(), st.s1.emplace_back();
    if (buffers >= 1 && n) {
      check(cudaMemsetAsync(st.s0.back().reserve(n), 0, n * sizeof(float), ctx.stream()), "cudaMemsetAsync");
    }
    if (buffers >= 2 && n) {
      check(cudaMemsetAsync(st.s1.back().reserve(n), 0, n * sizeof(float), ctx.stream()), "cudaMemsetAsync");
    }
  }
  check(cudaMemsetAsync(st.t.reserve(1), 0, sizeof(long long), ctx.stream()), "cudaMemsetAsync");
  check(cudaMemsetAsync(st.skip.reserve(1), 0, sizeof(int), ctx.stream()), "cudaMemsetAsync");
}

inline void validate(const DeviceState& st, const std::vector<Tensor>& ts, const char* who) {
  check_pending(who);
  if (ts.size() != st.shapes.size())
    throw shape_error(std::string(who) + ": " + std::to_string(ts.size()) + " tensors, state has " +
                      std::to_string(st.shapes.size()));
  for (std::size_t i = 0; i < ts.size(); ++i)
    if (ts[i].rows != st.shapes[i].first || ts[i].cols != st.shapes[i].second)
      throw shape_error(std::string(who) + ": tensor " + std::to_string(i) + " is " + shape_string(ts[i].rows, ts[i].cols) +
                        ", state has " + shape_string(st.shapes[i].first, st.shapes[i].second));
}

// Enqueues `launch(table, blocks)` for successive batches of (tensor, chunk) pairs, over the
// tensors `pick` selects, each with its update factor scale_of(tensor).
template <class F, class Pick, class ScaleOf>
void for_each_table(const std::vector<Tensor>& ts, DeviceState& st, F&& launch, Pick pick, ScaleOf scale_of) {
  kernels::MultiTensorTable tab{};
  int nt = 0, nb = 0;
  auto flush = [&] {
    if (nb) launch(tab, nb);
    nt = 0, nb = 0;
  };
  for (std::size_t i = 0; i < ts.size(); ++i) {
    const Index n = ts[i].size();
    if (n == 0 || !pick(ts[i])) continue;
    if (nt == kernels::kMaxTensors) flush();
    tab.w[nt] = ts[i].w, tab.g[nt] = ts[i].g, tab.n[nt] = n;
    tab.s0[nt] = st.s0[i].get(), tab.s1[nt] = st.s1[i].get();
    tab.scale[nt] = float(scale_of(ts[i]));
    const Index chunks = (n + kernels::kChunk - 1) / kernels::kChunk;
    for (Index c = 0; c < chunks; ++c) {
      if (nb == kernels::kMaxBlocks) {
        // The current tensor continues in the next launch: re-register it as entry 0.
        launch(tab, nb);
        tab.w[0] = tab.w[nt], tab.g[0] = tab.g[nt], tab.n[0] = tab.n[nt];
        tab.s0[0] = tab.s0[nt], tab.s1[0] = tab.s1[nt], tab.scale[0] = tab.scale[nt];
        nt = 0, nb = 0;
      }
      tab.block_tensor[nb] = static_cast<unsigned char>(nt);
      tab.block_chunk[nb] = int(c);
      ++nb;
    }
    ++nt;
  }
  flush();
}

// Tensor filters and update factors for for_each_table.
inline bool every_tensor(const Tensor&) { return true; }
inline bool vectors_only(const Tensor& x) { return x.role == Role::Vector; }
inline double unit_factor(const Tensor&) { return 1.0; }

/// Every tensor, factor 1.
template <class F>
void for_each_table(const std::vector<Tensor>& ts, DeviceState& st, F&& launch) {
  for_each_table(ts, st, std::forward<F>(launch), every_tensor, unit_factor);
}

inline kernels::StepScalars scalars(const Hyper& hp, DeviceState& st) {
  return {float(hp.lr), float(hp.weight_decay), float(hp.beta1), float(hp.beta2), float(hp.eps), st.t.get(),
          st.skip.get()};
}

// Clears the flag and, unless Unchecked, runs the non-finite check over all gradients.
inline void begin_step(const Hyper& hp, const std::vector<Tensor>& ts, DeviceState& st, Context& ctx) {
  check(cudaMemsetAsync(st.skip.get(), 0, sizeof(int), ctx.stream()), "cudaMemsetAsync");
  if (hp.on_non_finite == NonFinitePolicy::Unchecked) return;
  for_each_table(ts, st, [&](const kernels::MultiTensorTable& tab, int blocks) {
    kernels::multi_tensor_check<<<unsigned(blocks), kernels::kMtThreads, 0, ctx.stream()>>>(tab, st.skip.get());
    check_launch("multi_tensor_check");
  });
}

inline void end_step(DeviceState& st, Context& ctx) {
  kernels::finish_step<<<1, 1, 0, ctx.stream()>>>(st.t.get(), st.skip.get());
  check_launch("finish_step");
}

// Enqueues the elementwise rule R over the tensors `pick` selects (no begin/end: the caller's
// step brackets it).
template <kernels::Rule R, class Pick, class ScaleOf>
void enqueue_elementwise(const Hyper& hp, const std::vector<Tensor>& ts, DeviceState& st, Context& ctx,
                         const char* who, Pick pick, ScaleOf scale_of) {
  const kernels::StepScalars p = scalars(hp, st);
  for_each_table(
      ts, st,
      [&](const kernels::MultiTensorTable& tab, int blocks) {
        kernels::multi_tensor_step<R><<<unsigned(blocks), kernels::kMtThreads, 0, ctx.stream()>>>(tab, p);
        check_launch(who);
      },
      pick, scale_of);
}

// Groups the tensors that `pick` selects by shape (st.groups, indices into ts) and gives each
// group one contiguous direction buffer (st.group_u), so its Newton-Schulz is one batched call.
template <class Pick>
void group_by_shape(DeviceState& st, const std::vector<Tensor>& ts, Pick pick) {
  for (std::size_t i = 0; i < ts.size(); ++i) {
    if (ts[i].size() == 0 || !pick(ts[i])) continue;
    bool placed = false;
    for (auto& g : st.groups)
      if (ts[g.front()].rows == ts[i].rows && ts[g.front()].cols == ts[i].cols) {
        g.push_back(i);
        placed = true;
        break;
      }
    if (!placed) st.groups.push_back({i});
  }
  for (const auto& g : st.groups) {
    st.group_u.emplace_back();
    st.group_u.back().reserve(g.size() * std::size_t(ts[g.front()].size()));
  }
}

}  // namespace detail

/// The elementwise rules as optimizers: one multi-tensor pass per step. The number of state
/// buffers follows from the rule (Adam: m and v; Lion: m; sign: none). With Rescaled, hidden and
/// output tensors' updates are multiplied by s(m, n) = 1/n (fan-in; steepest::adamw_rescaled),
/// embeddings and vectors by 1.
template <kernels::Rule R, bool Rescaled = false>
struct ElementwiseOptimizer {
  Hyper hp;
  static constexpr int state_buffers = R == kernels::Rule::AdamW ? 2 : (R == kernels::Rule::Lion ? 1 : 0);
  static constexpr const char* name = R == kernels::Rule::AdamW ? (Rescaled ? "cuda::AdamWRescaled" : "cuda::AdamW")
                                      : R == kernels::Rule::Lion ? "cuda::Lion"
                                                                 : "cuda::SignDescent";
  static double scale_of(const Tensor& x) {
    return Rescaled && (x.role == Role::Hidden || x.role == Role::Output)
               ? SignNorm::mean_normalized_scale(x.rows, x.cols)
               : 1.0;
  }
  DeviceState init(const std::vector<Tensor>& ts, Context& ctx) const {
    DeviceState st;
    detail::init_state(st, ts, state_buffers, ctx);
    return st;
  }
  void step(const std::vector<Tensor>& ts, DeviceState& st, Context& ctx) const {
    detail::validate(st, ts, name);
    detail::begin_step(hp, ts, st, ctx);
    detail::enqueue_elementwise<R>(hp, ts, st, ctx, name, detail::every_tensor, scale_of);
    detail::end_step(st, ctx);
  }
};

/// AdamW on the GPU: the CPU `steepest::adamw(hp)` rule (bias-corrected Adam, decoupled decay).
using AdamW = ElementwiseOptimizer<kernels::Rule::AdamW>;
/// Rescaled AdamW on the GPU (steepest::adamw_rescaled, Adam's muP rule): AdamW with hidden and
/// output updates times 1/fan-in, by each Tensor's role.
using AdamWRescaled = ElementwiseOptimizer<kernels::Rule::AdamW, true>;
/// Lion on the GPU (steepest::lion): u = sign(b1 m + (1-b1) g); m = b2 m + (1-b2) g.
using Lion = ElementwiseOptimizer<kernels::Rule::Lion>;
/// Sign descent on the GPU (steepest::sign_descent): W <- (1 - lr wd) W - lr sign(G).
using SignDescent = ElementwiseOptimizer<kernels::Rule::Sign>;

/// MOGA-row on the GPU (steepest::moga_row): for matrices (every role but Vector) row-normalize
/// g, Adam moments, times s(m, n) = n^{-1/2}, decoupled step; Vector-role tensors get plain
/// AdamW, as on the CPU.
struct MogaRow {
  Hyper hp;
  DeviceState init(const std::vector<Tensor>& ts, Context& ctx) const {
    DeviceState st;
    detail::init_state(st, ts, 2, ctx);
    return st;
  }
  void step(const std::vector<Tensor>& ts, DeviceState& st, Context& ctx) const {
    detail::validate(st, ts, "cuda::MogaRow::step");
    detail::begin_step(hp, ts, st, ctx);
    const kernels::StepScalars p = detail::scalars(hp, st);
    detail::enqueue_elementwise<kernels::Rule::AdamW>(hp, ts, st, ctx, "cuda::MogaRow::step (vectors)",
                                                      detail::vectors_only, detail::unit_factor);
    for (std::size_t i = 0; i < ts.size(); ++i) {
      const Tensor& x = ts[i];
      if (x.size() == 0 || x.role == Role::Vector) continue;
      const float s = float(RowNorm<2>::mean_normalized_scale(x.rows, x.cols));
      kernels::moga_row_step<<<unsigned(x.rows), kernels::kRowThreads, 0, ctx.stream()>>>(
          x.w, x.g, st.s0[i].get(), st.s1[i].get(), x.rows, x.cols, s, p);
      check_launch("moga_row_step");
    }
    detail::end_step(st, ctx);
  }
};

/// MOGA-col on the GPU (steepest::moga_col): for matrices (every role but Vector) column-
/// normalize g, Adam moments, times s(m, n) = sqrt(m)/n, decoupled step; Vector-role tensors get
/// plain AdamW, as on the CPU. Two passes per matrix: the column sums of squares (tiles, one
/// atomic per column per tile), then one fused elementwise pass.
struct MogaCol {
  Hyper hp;
  DeviceState init(const std::vector<Tensor>& ts, Context& ctx) const {
    DeviceState st;
    detail::init_state(st, ts, 2, ctx);
    Index widest = 1;
    for (const Tensor& x : ts) widest = std::max(widest, x.cols);
    ctx.scratch_f32[3].reserve(std::size_t(widest));  // column norms: allocated here, not in step
    return st;
  }
  void step(const std::vector<Tensor>& ts, DeviceState& st, Context& ctx) const {
    detail::validate(st, ts, "cuda::MogaCol::step");
    detail::begin_step(hp, ts, st, ctx);
    const kernels::StepScalars p = detail::scalars(hp, st);
    detail::enqueue_elementwise<kernels::Rule::AdamW>(hp, ts, st, ctx, "cuda::MogaCol::step (vectors)",
                                                      detail::vectors_only, detail::unit_factor);
    for (std::size_t i = 0; i < ts.size(); ++i) {
      const Tensor& x = ts[i];
      if (x.size() == 0 || x.role == Role::Vector) continue;
      float* colsq = ctx.scratch_f32[3].reserve(std::size_t(x.cols));
      enqueue_col_sumsq(x.g, x.rows, x.cols, colsq, ctx.stream());
      const float s = float(ColNorm<2>::mean_normalized_scale(x.rows, x.cols));
      kernels::moga_col_step<<<kernels::grid_for(x.size()), 256, 0, ctx.stream()>>>(
          x.w, x.g, st.s0[i].get(), st.s1[i].get(), x.rows, x.cols, colsq, s, p);
      check_launch("moga_col_step");
    }
    detail::end_step(st, ctx);
  }
};

namespace detail {

// State of the role-aware optimizers (Muon, Scion): one momentum buffer per tensor (s0); hidden
// tensors grouped by shape with one contiguous direction buffer per group (batched Newton-
// Schulz); every other tensor a direction buffer of its own (s1).
inline DeviceState init_roles(const std::vector<Tensor>& ts, Context& ctx) {
  DeviceState st;
  init_state(st, ts, 1, ctx);
  group_by_shape(st, ts, [](const Tensor& x) { return x.role == Role::Hidden; });
  Index widest = 1;
  for (std::size_t i = 0; i < ts.size(); ++i) {
    if (ts[i].role != Role::Hidden && ts[i].size()) st.s1[i].reserve(std::size_t(ts[i].size()));
    widest = std::max(widest, ts[i].cols);
  }
  ctx.scratch_f32[3].reserve(std::size_t(widest));  // column norms / global norm of the policies
  return st;
}

// One step of momentum -> per-role direction -> step, shared by Muon and Scion:
//   M = b M + (1-b) G;  U = (1-b) G + b M (nesterov) or U = M
//   D = Newton-Schulz(U) for hidden tensors (batched by shape), times hidden_scale(m, n);
//       otherwise the role's mean-normalized LMO of U: columns (embedding), sign (output),
//       g / ||g|| (vector), times its s(m, n) and other_radius(role)
//   W = W (1 - lr wd) - lr D
template <class Schedule, int Steps, class HiddenScale, class OtherRadius>
void role_step(const Hyper& hp, bool nesterov, float wd, HiddenScale hidden_scale, OtherRadius other_radius,
               const std::vector<Tensor>& ts, DeviceState& st, Context& ctx, const char* who) {
  validate(st, ts, who);
  begin_step(hp, ts, st, ctx);
  const float lr = float(hp.lr), b = float(hp.beta1);
  const cudaStream_t s = ctx.stream();
  for (std::size_t gi = 0; gi < st.groups.size(); ++gi) {  // hidden matrices, batched by shape
    const auto& group = st.groups[gi];
    const Index m = ts[group.front()].rows, n = ts[group.front()].cols, size = m * n;
    float* u = st.group_u[gi].get();
    for (std::size_t j = 0; j < group.size(); ++j)
      kernels::ema_momentum<<<kernels::grid_for(size), 256, 0, s>>>(ts[group[j]].g, st.s0[group[j]].get(),
                                                                     u + Index(j) * size, size, b, nesterov,
                                                                     st.skip.get());
    check_launch("ema_momentum");
    // A skipped step still runs the GEMMs on stale data (their result is discarded below):
    // reading the flag on the host would need a synchronization.
    newton_schulz_batched<Schedule>(u, u, Index(group.size()), m, n, Steps, ctx);
    const float scale = float(hidden_scale(m, n));
    for (std::size_t j = 0; j < group.size(); ++j)
      kernels::apply_direction<<<kernels::grid_for(size), 256, 0, s>>>(ts[group[j]].w, u + Index(j) * size, size, lr,
                                                                       wd, scale, st.skip.get());
    check_launch("apply_direction");
  }
  for (std::size_t i = 0; i < ts.size(); ++i) {  // the other roles, one tensor at a time
    const Tensor& x = ts[i];
    if (x.role == Role::Hidden || x.size() == 0) continue;
    float* d = st.s1[i].get();
    // Nesterov needs U apart from M, so it goes to d and the policy runs in place on d; plain
    // EMA reads M directly.
    float* mom = st.s0[i].get();
    kernels::ema_momentum<<<kernels::grid_for(x.size()), 256, 0, s>>>(x.g, mom, nesterov ? d : nullptr, x.size(), b,
                                                                      nesterov, st.skip.get());
    check_launch("ema_momentum");
    const DeviceMatrix<float> U = view(nesterov ? d : mom, x.rows, x.cols), D = view(d, x.rows, x.cols);
    double geo = 1.0;
    if (x.role == Role::Embedding) {
      ColNormalize::dualize(U, D, ctx);
      geo = ColNormalize::mean_normalized_scale(x.rows, x.cols);
    } else if (x.role == Role::Output) {
      SignNorm::dualize(U, D, ctx);
      geo = SignNorm::mean_normalized_scale(x.rows, x.cols);
    } else {
      VectorNorm<2>::dualize(U, D, ctx);
      geo = VectorNorm<2>::mean_normalized_scale(x.rows, x.cols);
    }
    kernels::apply_direction<<<kernels::grid_for(x.size()), 256, 0, s>>>(x.w, d, x.size(), lr, wd,
                                                                         float(other_radius(x.role) * geo),
                                                                         st.skip.get());
    check_launch("apply_direction");
  }
  end_step(st, ctx);
}

}  // namespace detail

/// Muon on the GPU: the CPU steepest::muon rule for every role. Nesterov-EMA momentum
/// (hp.beta1); hidden tensors get the polar factor by Newton-Schulz with `Schedule` times the
/// shape factor hp.shape_factor (original Muon's sqrt(max(1, m/n)) by default); embeddings,
/// heads and vectors get Scion's mean-normalized geometries (columns, sign, RMS); decoupled
/// weight decay. Hidden tensors of the same shape are grouped at init and each group's polar
/// factors are one batched Newton-Schulz (a transformer's 12 or 48 blocks of identical
/// matrices become a few strided-batched GEMM sequences instead of hundreds of calls).
template <class Schedule = QuinticSchedule, int Steps = Schedule::default_steps>
struct Muon {
  Hyper hp;
  Muon() { hp.shape_factor = ShapeFactor::MuonMax1; }
  explicit Muon(Hyper h) : hp(h) {}
  DeviceState init(const std::vector<Tensor>& ts, Context& ctx) const { return detail::init_roles(ts, ctx); }
  void step(const std::vector<Tensor>& ts, DeviceState& st, Context& ctx) const {
    detail::role_step<Schedule, Steps>(
        hp, true, float(hp.weight_decay),
        [&](Index m, Index n) { return shape_factor_value(hp.shape_factor, double(m), double(n)); },
        [](Role) { return 1.0; }, ts, st, ctx, "cuda::Muon::step");
  }
};

/// Scion on the GPU: the CPU steepest::scion (constrained) and steepest::scion_unconstrained
/// rules. Per tensor, by its role:
///   M = b M + (1-b) G                     (hp.beta1; plain EMA)
///   D = the role's LMO of M, mean-normalized:
///       Hidden     spectral, Newton-Schulz(Schedule, Steps), times sqrt(m/n)
///       Embedding  column normalization, times sqrt(m)/n
///       Output     sign, times 1/n
///       Vector     g / ||g||, times sqrt(mn) (= g / rms(g))
///   W = (1 - lr) W - lr rho D             (constrained: keeps ||W|| <= rho in the role's norm)
///   W = (1 - lr wd) W - lr rho D          (constrained = false)
/// with rho the role's radius (ScionRadii). Same-shape hidden tensors share one batched
/// Newton-Schulz, as in Muon.
template <class Schedule = QuinticSchedule, int Steps = Schedule::default_steps>
struct Scion {
  Hyper hp;
  ScionRadii radii{};
  bool constrained = true;

  double radius(Role r) const {
    return r == Role::Hidden ? radii.hidden
           : r == Role::Embedding ? radii.embedding
           : r == Role::Output    ? radii.output
                                  : radii.vector;
  }
  DeviceState init(const std::vector<Tensor>& ts, Context& ctx) const { return detail::init_roles(ts, ctx); }
  void step(const std::vector<Tensor>& ts, DeviceState& st, Context& ctx) const {
    // Constrained: W (1 - lr) is the decoupled step's W (1 - lr wd) with wd = 1.
    detail::role_step<Schedule, Steps>(
        hp, false, constrained ? 1.0f : float(hp.weight_decay),
        [&](Index m, Index n) { return radii.hidden * SpectralNorm<>::mean_normalized_scale(m, n); },
        [&](Role r) { return radius(r); }, ts, st, ctx, "cuda::Scion::step");
  }
};

}  // namespace cuda
}  // namespace steepest
